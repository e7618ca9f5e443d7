"""Whether this worker is shutting down: the flag every send looks at before claiming more.

A Celery worker sets it on ``worker_shutting_down`` (its warm shutdown: SIGTERM from
``docker stop`` or a Kubernetes rollout). The flag is made in the worker's main process on
``worker_init``, before the pool forks, so the prefork children that run the tasks share it: a
drain in a child notices the shutdown its parent received. Outside a worker it is a plain
in-process flag that ``request()`` sets.
"""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any, Protocol


class _Flag(Protocol):
    def is_set(self) -> bool: ...

    def set(self) -> None: ...

    def clear(self) -> None: ...


_flag: _Flag = threading.Event()


def arm(**kwargs: Any) -> None:
    """Make the flag shared with processes forked from here on (``worker_init``)."""
    global _flag
    _flag = multiprocessing.get_context("fork").Event()


def request(**kwargs: Any) -> None:
    """Ask every send of this process (and of its forked children) to stop claiming."""
    _flag.set()


def requested() -> bool:
    return _flag.is_set()


def reset() -> None:
    """Forget a request (tests)."""
    _flag.clear()
