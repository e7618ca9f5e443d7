"""pytest fixtures for projects that use django-supalytics (registered as a ``pytest11`` plugin).

``supalytics_events``: the events tracked during the test (see ``django_supalytics.testing``),
with ``assert_tracked(name, **lookups)``; nothing reaches Celery or the network.

``supalytics_receiver``: the mock receiver on a loopback socket, with the client's ``ENDPOINT``
and ``API_KEY`` pointed at it, its received events and fault injection (needs pytest-django).
Needs ``django_supalytics.receiver`` (and ``rest_framework``) in INSTALLED_APPS; it serves the
receiver's urls itself.
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
        if item.get_closest_marker("django_db"):
            continue
        if "supalytics_receiver" in fixtures:
            item.add_marker(pytest.mark.django_db(transaction=True))
        elif "supalytics_events" in fixtures:
            item.add_marker(pytest.mark.django_db)


@pytest.fixture
def supalytics_events() -> Iterator[Any]:
    """The events tracked during the test and not rolled back; none is handed to Celery.

    A test using it gets database access (``django_db``) unless it asks for its own."""
    from .testing import capture_events

    with capture_events() as events:
        yield events


@pytest.fixture(scope="session")
def supalytics_receiver_server(django_db_setup: None) -> Iterator[str]:
    """The base URL of a mock receiver in a thread, on this test run's database.

    It serves the receiver's own urls, whatever the project's ``ROOT_URLCONF`` mounts, and
    shares an in-memory SQLite test database with the tests (as ``LiveServerTestCase`` does).
    """
    from django.db import connections

    from .receiver.server import ReceiverHandler, ReceiverThread

    shared = {
        conn.alias: conn
        for conn in connections.all()
        if conn.vendor == "sqlite" and conn.is_in_memory_db()  # type: ignore[attr-defined]
    }
    for conn in shared.values():
        conn.inc_thread_sharing()
    thread = ReceiverThread("127.0.0.1", ReceiverHandler, shared)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    yield f"http://127.0.0.1:{thread.port}"
    thread.terminate()
    for conn in shared.values():
        conn.dec_thread_sharing()


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
