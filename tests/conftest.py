from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from django.conf import settings
from django.core.cache import caches

from django_supalytics import state
from django_supalytics.backends import locmem
from django_supalytics.backends.locmem import HandOver
from django_supalytics.dispatch import publisher
from django_supalytics.ratelimit import redis_client
from tests.backends import FlakyBackend
from tests.httpserver import ScriptedServer
from tests.processes import ChildProcess, free_port, wait_for

#: dj-stripe's tests run in a session of their own (tests/settings_djstripe.py; `make test` runs
#: it), so that its ~60 tables are not made and flushed for every other test.
DJSTRIPE_SETTINGS = "tests.settings_djstripe"
collect_ignore = (
    [] if settings.SETTINGS_MODULE == DJSTRIPE_SETTINGS else ["test_contrib_djstripe.py"]
)


@pytest.fixture(scope="session")
def django_db_use_migrations(request: pytest.FixtureRequest) -> bool:
    """pytest-django's own switch (``--no-migrations``), set for dj-stripe's session: its
    tables are made from the models there, as dj-stripe's migrations take about 90 s of CPU
    (Django renders the state of its ~60 models again for each operation). Ours run, and are
    checked, in the main session."""
    if settings.SETTINGS_MODULE == DJSTRIPE_SETTINGS:
        return False
    return not request.config.getvalue("nomigrations")


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    # dj-stripe's session where dj-stripe cannot be installed (Python 3.10): its one module
    # skips, so nothing is collected (exit status 5). That is the expected outcome there.
    if (
        exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED
        and settings.SETTINGS_MODULE == DJSTRIPE_SETTINGS
        and "djstripe" not in settings.INSTALLED_APPS
    ):
        session.exitstatus = pytest.ExitCode.OK


def pytest_xdist_auto_num_workers(config: Any) -> int | None:
    """``-n auto`` (``make test``) on SQLite, without the services: one process. There, with
    two processes on the cores, tests that time a probe or a backoff in tenths of a second
    failed in 3 of 6 runs (in test_dispatch.py, a long outage's one message per probe; in
    test_delivery.py, a row sent at most once per deliver_due); on PostgreSQL, a worker a core.
    """
    if not str(settings.DATABASES["default"]["ENGINE"]).endswith("postgresql"):
        return 0
    return None


def pytest_report_header(config: Any) -> str | None:
    if collect_ignore:
        return f"dj-stripe's tests: pytest --ds={DJSTRIPE_SETTINGS} tests/test_contrib_djstripe.py"
    return None


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
def _fresh_process_state() -> None:
    """Each test starts with the process's delivery state made anew (``state.reset()``)."""
    state.reset()


@pytest.fixture(autouse=True)
def _forget_publish_retries() -> Iterator[None]:
    yield
    # A message a test's broker refused must not be published during the next test.
    publisher.discard_retries()


@pytest.fixture
def published(settings: Any) -> list[HandOver]:
    """``DELIVERY_BACKEND`` ``"locmem"``: every hand-over of the test, in order (its event IDs,
    countdown and database); nothing reaches a queue."""
    settings.SUPALYTICS = {**settings.SUPALYTICS, "DELIVERY_BACKEND": "locmem"}
    locmem.outbox.clear()
    return locmem.outbox


@pytest.fixture
def broker(settings: Any) -> type[FlakyBackend]:
    """A broker behind the publisher thread (``ENQUEUE`` ``"background"``), which a test can
    take down: ``broker.refusals = 2``; ``broker.tries`` has every try."""
    settings.SUPALYTICS = {
        **settings.SUPALYTICS,
        "ENQUEUE": "background",
        "DELIVERY_BACKEND": "tests.backends.FlakyBackend",
    }
    FlakyBackend.reset()
    locmem.outbox.clear()
    return FlakyBackend


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


@pytest.fixture
def standalone(tmp_path) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], int]]]:
    """Start ``python -m django_supalytics.receiver`` (key ``sly_standalone``, a database of its
    own) with more arguments; returns the process and its port once it answers HTTP."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        db = str(tmp_path / f"events-{port}.db")
        argv = ["--port", str(port), "--key", "sly_standalone", "--db", db, *args]
        proc = subprocess.Popen(
            [sys.executable, "-m", "django_supalytics.receiver", *argv],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(proc)

        def listening() -> bool:
            try:
                requests.get(f"http://127.0.0.1:{port}/v1/openapi.json", timeout=1)
                return True
            except requests.RequestException:
                assert proc.poll() is None, "the receiver exited"
                return False

        wait_for(listening, timeout=60)
        return proc, port

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)
