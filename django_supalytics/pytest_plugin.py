"""pytest fixtures for projects that use django-supalytics (registered as a ``pytest11`` plugin).

``supalytics_events``: the events tracked during the test (see ``django_supalytics.testing``),
with ``assert_tracked(name, **lookups)``; nothing reaches Celery or the network.

``supalytics_receiver``: the mock receiver on a loopback socket, with the client's ``ENDPOINT``
and ``API_KEY`` pointed at it, its received events and fault injection (needs pytest-django).
Needs ``django_supalytics.receiver`` in INSTALLED_APPS and its urls mounted at the root.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from .receiver.faults import Fault
    from .receiver.models import ReceivedEvent


class LiveReceiver:
    """A running mock receiver: ``url``, ``events()``, ``inject(...)``, ``reset()``."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/v1/events"
        self.api_key = api_key

    def events(self) -> QuerySet[ReceivedEvent]:
        from .receiver.models import ReceivedEvent

        return ReceivedEvent.objects.order_by("id")

    def inject(self, status: int | None = None, **kwargs: Any) -> Fault:
        from .receiver import faults

        return faults.inject(status, **kwargs)

    def stats(self) -> dict[str, int]:
        """What the receiver answered since the last reset: ``{"200": n, "429": n, ...}``."""
        from .receiver import stats

        return stats.read()

    def reset(self, received: bool = True) -> None:
        from .receiver import faults

        faults.reset(received=received)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # pytest-django creates test databases only for tests that it sees need one when it
    # collects them; a fixture that asks for the database at run time is too late for that.
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "supalytics_receiver" in fixtures and not item.get_closest_marker("django_db"):
            item.add_marker(pytest.mark.django_db(transaction=True))


@pytest.fixture
def supalytics_events() -> Iterator[Any]:
    """The events tracked (and committed) during the test; none is handed to Celery."""
    from .testing import capture_events

    with capture_events() as events:
        yield events


@pytest.fixture(scope="session")
def supalytics_receiver_server(django_db_setup: None) -> Iterator[str]:
    """The base URL of a receiver serving this test run's project in a thread."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler

    from .receiver.server import ReceiverThread

    thread = ReceiverThread("127.0.0.1", StaticFilesHandler)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    yield f"http://127.0.0.1:{thread.port}"
    thread.terminate()


@pytest.fixture
def supalytics_receiver(request: pytest.FixtureRequest, settings: Any) -> Iterator[LiveReceiver]:
    request.getfixturevalue("transactional_db")
    base_url = request.getfixturevalue("supalytics_receiver_server")
    keys = list(getattr(settings, "SUPALYTICS_RECEIVER", {}).get("API_KEYS", []))
    api_key = keys[0] if keys else "sly_test_pytest"
    settings.SUPALYTICS_RECEIVER = {
        **getattr(settings, "SUPALYTICS_RECEIVER", {}),
        "API_KEYS": keys or [api_key],
    }
    receiver = LiveReceiver(base_url, api_key)
    settings.SUPALYTICS = {
        **getattr(settings, "SUPALYTICS", {}),
        "API_KEY": api_key,
        "ENDPOINT": receiver.url,
    }
    receiver.reset(received=False)
    yield receiver
    receiver.reset(received=False)
