"""Connections for the client: a keep-alive session per thread, whose requests a watchdog cuts
off at their deadline.

A socket timeout bounds each read, not the answer: a server that sends a byte every half
second would hold a request as long as it likes. So one thread per process watches every
request's deadline; at it, it shuts down the socket of each connection the request took from
its pool, and again every ``POKE`` seconds while the request is not over (for a connection
opened meanwhile). The blocked read returns at once, the request fails, and the connection is
dropped.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool

#: Seconds between cuts once a request is past its deadline and not over yet.
POKE = 0.1

_local = threading.local()


@dataclass(eq=False)
class Watch:
    """One request's deadline (``time.monotonic()``); ``fired`` once it was cut off."""

    deadline: float
    connections: list[Any] = field(default_factory=list)
    fired: bool = False
    done: bool = False


class _Watchdog:
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also after a fork: the thread is gone in the child, and its lock may have been held.
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, seconds: float) -> Iterator[Watch]:
        entry = Watch(time.monotonic() + seconds)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="supalytics-deadline", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._heap, (entry.deadline, next(self._order), entry))
            if self._heap[0][2] is entry:  # else the thread wakes up earlier anyway
                self._cond.notify()
        _local.watch = entry
        try:
            yield entry
        finally:
            _local.watch = None
            with self._cond:  # under the lock: no socket is shut once the request is over
                entry.done = True
                entry.connections.clear()

    def attach(self, connection: Any) -> None:
        entry: Watch | None = getattr(_local, "watch", None)
        if entry is not None:
            with self._cond:
                entry.connections.append(connection)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                due, _, entry = self._heap[0]
                now = time.monotonic()
                if due > now:
                    self._cond.wait(due - now)
                    continue
                heapq.heapreplace(self._heap, (now + POKE, next(self._order), entry))
                entry.fired = True
                for connection in entry.connections:
                    _shut(getattr(connection, "sock", None))


def _shut(sock: object) -> None:
    if isinstance(sock, socket.socket):
        # The plain socket's shutdown, under TLS too: it unblocks the reading thread.
        with suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


_watchdog = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_watchdog._reset)


def deadline_watch(seconds: float) -> Any:
    """A context manager: the requests this thread makes inside it (through ``get_session()``)
    are cut off ``seconds`` from now; it yields a ``Watch`` whose ``fired`` says if they were."""
    return _watchdog.watch(seconds)


class _WatchedPool(HTTPConnectionPool):
    """Shows the watchdog each connection a request takes from the pool."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)
        _watchdog.attach(connection)
        return connection


@cache
def _watched(pool_class: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
    if issubclass(pool_class, _WatchedPool):
        return pool_class
    return type(f"Watched{pool_class.__name__}", (_WatchedPool, pool_class), {})


def _watch_pools(manager: Any) -> Any:
    # Whatever the manager builds (HTTP, HTTPS, through a proxy, SOCKS), its pools are watched.
    classes = manager.pool_classes_by_scheme
    manager.pool_classes_by_scheme = {scheme: _watched(cls) for scheme, cls in classes.items()}
    return manager


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        return _watch_pools(super().proxy_manager_for(proxy, **proxy_kwargs))


def get_session() -> requests.Session:
    """A keep-alive session per thread (``requests.Session`` is not thread-safe)."""
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        adapter = _Adapter(pool_connections=2, pool_maxsize=8, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.session = session
    return session
