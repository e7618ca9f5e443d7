"""pytest fixtures for projects that use django-supalytics (registered as a ``pytest11`` plugin).

Hermetic by default, as Django's test runner makes ``send_mail`` fill ``mail.outbox``: every
test (under pytest-django) runs with ``SUPALYTICS["DELIVERY_BACKEND"] = "locmem"``, so a
committed ``track()`` reaches no broker and no worker. A test marked
``@pytest.mark.supalytics_delivery`` keeps the project's backend; ``supalytics_hermetic = false``
in the pytest ini file turns the whole behaviour off.

``supalytics_events``: the events tracked during the test (see ``django_supalytics.testing``),
with ``assert_tracked(name, **lookups)``; ``DELIVERY_BACKEND`` is ``"locmem"`` for the test, so
nothing reaches a queue or the network.

``supalytics_receiver``: the mock receiver on a loopback socket, with the client's ``ENDPOINT``
and ``API_KEY`` pointed at it, its host in ``ALLOWED_HOSTS`` for the test (as
``LiveServerTestCase`` does), its received events and fault injection (needs pytest-django).
Needs ``django_supalytics.receiver`` (and ``rest_framework``) in INSTALLED_APPS; it serves the
receiver's urls itself.
"""

from __future__ import annotations

import uuid
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


HERMETIC_INI = "supalytics_hermetic"
DELIVERY_MARKER = "supalytics_delivery"
#: The cache alias the ``supalytics_receiver`` fixture gives the rate limiters, the outage
#: circuit and the receiver's counters for its test, when hermetic.
TEST_CACHE_ALIAS = "supalytics_test"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        HERMETIC_INI,
        type="bool",
        default=True,
        help="django-supalytics: run every test with DELIVERY_BACKEND 'locmem' unless it is "
        f"marked {DELIVERY_MARKER} (default: true)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{DELIVERY_MARKER}: keep the project's SUPALYTICS['DELIVERY_BACKEND'] for this test "
        "(django-supalytics otherwise hands events to its 'locmem' backend)",
    )


def _hermetic(config: pytest.Config) -> bool:
    return bool(config.getini(HERMETIC_INI))


def _django_configured() -> bool:
    try:
        from django.conf import settings
    except ImportError:  # pragma: no cover - the package needs Django
        return False
    return bool(settings.configured)


@pytest.fixture(autouse=True)
def _supalytics_hermetic_delivery(request: pytest.FixtureRequest) -> Iterator[None]:
    """``DELIVERY_BACKEND = "locmem"`` for the test, unless marked ``supalytics_delivery`` or
    turned off with the ``supalytics_hermetic`` ini option."""
    if (
        not _hermetic(request.config)
        or request.node.get_closest_marker(DELIVERY_MARKER)
        or not _django_configured()
    ):
        yield
        return
    from django.conf import settings
    from django.test import override_settings

    from .backends import locmem

    raw = getattr(settings, "SUPALYTICS", {})
    override = override_settings(
        SUPALYTICS={**(raw if isinstance(raw, dict) else {}), "DELIVERY_BACKEND": "locmem"}
    )
    override.enable()
    locmem.outbox.clear()
    try:
        yield
    finally:
        override.disable()


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
def supalytics_events(settings: Any) -> Iterator[Any]:
    """The events tracked during the test and not rolled back; the test's hand-overs go to
    the ``"locmem"`` delivery backend (``django_supalytics.backends.locmem.outbox``, cleared
    first), none to a queue.

    A test using it gets database access (``django_db``) unless it asks for its own."""
    from .backends import locmem
    from .testing import _recording

    # Through pytest-django's ``settings``, so that the test's own changes of it keep the
    # backend and are undone with it.
    raw = getattr(settings, "SUPALYTICS", {})
    settings.SUPALYTICS = {**(raw if isinstance(raw, dict) else {}), "DELIVERY_BACKEND": "locmem"}
    locmem.outbox.clear()
    with _recording() as events:
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
    """The mock receiver, serving on a loopback socket for this test.

    The client's ``ENDPOINT`` and ``API_KEY`` point at it, and its host is in
    ``ALLOWED_HOSTS`` for the test (as ``LiveServerTestCase`` does). When hermetic (the
    default), the rate limiters, the outage circuit and the receiver's counters live in a
    local-memory cache of the test's own, never in the project's (Redis) cache."""
    from django.apps import apps

    if not apps.is_installed("django_supalytics.receiver"):
        raise pytest.UsageError(
            "supalytics_receiver needs the mock receiver's apps in INSTALLED_APPS of the test "
            'settings: INSTALLED_APPS += ["rest_framework", "django_supalytics.receiver"] '
            '(pip install "django-supalytics[receiver]")'
        )
    request.getfixturevalue("transactional_db")
    base_url = request.getfixturevalue("supalytics_receiver_server")
    keys = list(getattr(settings, "SUPALYTICS_RECEIVER", {}).get("API_KEYS", []))
    api_key = keys[0] if keys else "sly_test_pytest"
    settings.SUPALYTICS_RECEIVER = {
        **getattr(settings, "SUPALYTICS_RECEIVER", {}),
        "API_KEYS": keys or [api_key],
    }
    receiver = LiveReceiver(base_url, api_key)
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1"]
    cache: dict[str, Any] = {}
    if _hermetic(request.config):
        settings.CACHES = {
            **settings.CACHES,
            TEST_CACHE_ALIAS: {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": f"supalytics-test-{uuid.uuid4().hex}",
            },
        }
        cache = {"CACHE_ALIAS": TEST_CACHE_ALIAS}
        settings.SUPALYTICS_RECEIVER = {**settings.SUPALYTICS_RECEIVER, **cache}
    settings.SUPALYTICS = {
        **getattr(settings, "SUPALYTICS", {}),
        "API_KEY": api_key,
        "ENDPOINT": receiver.url,
        **cache,
    }
    receiver.reset(received=False)
    yield receiver
    receiver.reset(received=False)
