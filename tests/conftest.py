from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from django.conf import settings
from django.core.cache import caches

from django_supalytics.dispatch import publisher
from django_supalytics.ratelimit import redis_client
from tests.httpserver import ScriptedServer
from tests.processes import ChildProcess


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    postgres = str(settings.DATABASES["default"]["ENGINE"]).endswith("postgresql")
    redis = "redis" in settings.CACHES["default"]["BACKEND"].lower()
    mariadb = "mariadb" in settings.DATABASES
    for item in items:
        if item.get_closest_marker("mariadb") and not mariadb:
            item.add_marker(pytest.mark.skip(reason="needs MariaDB (or MySQL) and mysqlclient"))
        if item.get_closest_marker("postgres") and not postgres:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL"))
        if item.get_closest_marker("redis") and not redis:
            item.add_marker(pytest.mark.skip(reason="needs Redis"))


@pytest.fixture(autouse=True)
def _clear_caches() -> Iterator[None]:
    yield
    for alias in settings.CACHES:
        cache = caches[alias]
        client = redis_client(cache)
        if client is None:
            cache.clear()
            continue
        # Only this run's keys: clear() is FLUSHDB, which would wipe the rate-limit state,
        # faults and counts of another test run sharing the Redis database.
        keys = list(client.scan_iter(match=cache.make_key("*"), count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture(autouse=True)
def _forget_publish_retries() -> Iterator[None]:
    yield
    # A message a test's broker refused must not be published during the next test.
    publisher.discard_retries()


@pytest.fixture
def published() -> Iterator[Any]:
    """``deliver_event.apply_async``, mocked: what would have been sent to the broker."""
    with mock.patch("django_supalytics.tasks.deliver_event.apply_async") as apply_async:
        yield apply_async


@pytest.fixture
def handed_over() -> Iterator[list[list[int]]]:
    """The messages handed to Celery (``deliver_event`` or ``deliver_events``), each as the
    list of event IDs it names, in order; nothing reaches a broker."""
    messages: list[list[int]] = []

    def capture(task: Any, args: tuple[Any, ...], countdown: float | None = None) -> bool:
        messages.append(list(args[0]) if isinstance(args[0], list) else [args[0]])
        return True

    with mock.patch("django_supalytics.dispatch.apply_task", capture):
        yield messages


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def endpoint(server: ScriptedServer, settings: Any) -> ScriptedServer:
    """The client pointed at a scripted server, with no rate-limit waits to speak of."""
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENDPOINT": server.url, "RATE_LIMIT": 10_000}
    return server


@pytest.fixture
def processes() -> Iterator[list[ChildProcess]]:
    """Stops, at the end of the test, every process a test appends here."""
    started: list[ChildProcess] = []
    yield started
    for process in started:
        process.stop()
