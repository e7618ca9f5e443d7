"""The process's own delivery state, in one place.

What a process keeps between sends: the delivery backend, the redis-py clients behind caches,
the API's clock as learned from its answers, the outage circuits of a cache that is not Redis,
and the request threads. All of it is made again in a forked child (a prefork worker, a
``--preload`` web server) and whenever a setting it is made from changes (``setting_changed``,
so ``override_settings`` reaches it). Tests call ``reset()`` to start from nothing.

Not here, on purpose: the publisher thread (``dispatch.publisher``), which must outlive a
setting change to publish what was committed before it, and the shutdown flag
(``shutdown``), which a worker's children share with it.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.core.signals import setting_changed

#: Settings the state is made from.
SETTINGS = frozenset({"SUPALYTICS", "CACHES", "TASKS"})


@dataclass
class ProcessState:
    pid: int = field(default_factory=os.getpid)
    backend: Any = None
    redis_clients: dict[str, Any] = field(default_factory=dict)
    server_clocks: dict[str, Any] = field(default_factory=dict)
    circuits: dict[str, dict[str, float]] = field(default_factory=dict)
    executors: dict[int, ThreadPoolExecutor] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_state = ProcessState()


def current() -> ProcessState:
    """This process's state (a forked child's own, made on first use)."""
    global _state
    if _state.pid != os.getpid():
        _state = ProcessState()
    return _state


def reset(**kwargs: Any) -> None:
    """Forget everything: the next use makes it anew. A send still running keeps the request
    threads it has; the pool's idle threads end once nothing refers to it."""
    global _state
    _state = ProcessState()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in SETTINGS:
        reset()


setting_changed.connect(_on_setting_changed, dispatch_uid="django_supalytics.state")
