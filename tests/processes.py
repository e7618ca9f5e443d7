"""Processes of this project started by tests and benchmarks: Celery workers, receivers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, connections

ROOT = Path(__file__).resolve().parent.parent
#: The marks of a soak test's module: real processes on PostgreSQL and Redis, run by make soak.
SOAK_MARKS = [
    pytest.mark.slow,
    pytest.mark.soak,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ChildProcess:
    """A process of this project (a Celery worker, a receiver) on this test run's database."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(settings.RUN_DIR) / f"process-{time.time_ns()}.log"
        self._log_file: Any = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="tests.settings",
            SUPALYTICS_TEST_DB_NAME=str(connection.settings_dict["NAME"]),
            SUPALYTICS_TEST_DB_NAMES=json.dumps(
                {alias: str(connections[alias].settings_dict["NAME"]) for alias in connections}
            ),
            PYTHONPATH=str(ROOT),
            **self.extra_env,
        )
        return env

    def start(self, ready: Callable[[], bool]) -> ChildProcess:
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, *self.argv],
            cwd=ROOT,
            env=self.env(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        proc = self.proc
        wait_for(lambda: proc.poll() is not None or ready(), timeout=60)
        if proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"{self.argv} exited:\n{self.output()[-3000:]}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_worker_process(endpoint: str, concurrency: int = 2, **env: str) -> ChildProcess:
    """A real ``celery worker`` for this test run's broker and test database."""
    worker = worker_process(endpoint, concurrency, **env)
    return worker.start(lambda: "ready." in worker.output())


def worker_process(
    endpoint: str, concurrency: int = 2, queues: str | None = None, **env: str
) -> ChildProcess:
    """``start_worker_process``'s worker, not started yet (``.start(ready)`` starts it);
    ``queues`` (``-Q``) instead of the default queue."""
    return ChildProcess(
        [
            "-m",
            "celery",
            "-A",
            "testproject",
            "worker",
            "--pool=prefork",
            f"--concurrency={concurrency}",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"test-{time.time_ns()}@%h",
            *(["-Q", queues] if queues else []),
        ],
        env={"SUPALYTICS_ENDPOINT": endpoint, **env},
    )


def start_server_process(argv: list[str], port: int, **env: str) -> ChildProcess:
    """A server of this project (``argv`` for python) that is ready once ``port`` listens."""
    server = ChildProcess(argv, env=env)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    return server.start(listening)


def start_receiver_process(port: int, *args: str, **env: str) -> ChildProcess:
    """The mock receiver served by ``manage.py supalytics_receiver`` on ``port``."""
    argv = [str(ROOT / "manage.py"), "supalytics_receiver", "--port", str(port), *args]
    return start_server_process(argv, port, **env)
