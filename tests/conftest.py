from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import caches
from django.db import connection

from tests.httpserver import ScriptedServer

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    redis = "redis" in settings.CACHES["default"]["BACKEND"].lower()
    for item in items:
        if item.get_closest_marker("postgres") and not postgres:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL"))
        if item.get_closest_marker("redis") and not redis:
            item.add_marker(pytest.mark.skip(reason="needs Redis"))


@pytest.fixture(autouse=True)
def _clear_caches() -> Iterator[None]:
    yield
    for alias in settings.CACHES:
        caches[alias].clear()


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


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


class WorkerProcess:
    """A real ``celery worker`` process for this test run's broker and test database."""

    def __init__(self, endpoint: str, concurrency: int = 2, extra_env: dict[str, str] | None = None):
        self.endpoint = endpoint
        self.concurrency = concurrency
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(os.environ["SUPALYTICS_TEST_RUN_DIR"]) / f"worker-{time.time_ns()}.log"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="tests.settings",
            SUPALYTICS_TEST_DB_NAME=str(connection.settings_dict["NAME"]),
            SUPALYTICS_ENDPOINT=self.endpoint,
            PYTHONPATH=str(ROOT),
            **self.extra_env,
        )
        return env

    def start(self) -> WorkerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "testproject", "worker", "--pool=prefork",
             f"--concurrency={self.concurrency}", "--loglevel=INFO", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "-n", f"test-{time.time_ns()}@%h"],
            cwd=ROOT, env=self.env(), stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
        )
        wait_for(lambda: b"ready." in self.log.read_bytes() or self.proc.poll() is not None,
                 timeout=60)
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited:\n{self.log.read_text()[-3000:]}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(endpoint: str, **kwargs: Any) -> WorkerProcess:
        worker = WorkerProcess(endpoint, **kwargs).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
