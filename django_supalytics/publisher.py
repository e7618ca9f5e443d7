"""The publisher thread: the one retry layer for the broker (``dispatch`` explains the flow).

A daemon thread per process takes what committed transactions hand it, gathers what commits
within ``COALESCE_SECONDS`` into one publish, and tries again, 1, 2, 4 ... seconds apart (at most
``PUBLISH_RETRY_MAX``) for up to ``SWEEP_GRACE``, what the broker refused, keeping its due time.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .backends import get_backend
from .conf import conf

logger = logging.getLogger("django_supalytics")

#: How long the publisher gathers commits before one publish: the added delivery latency.
COALESCE_SECONDS = 0.02
#: Longest wait between two tries of a publish that failed.
PUBLISH_RETRY_MAX = 10.0

PublishNow = Callable[..., Any]
PublishChunks = Callable[[list[int], float | None, str | None], list[list[int]]]


@dataclass
class _Retry:
    """A message that did not go out: its rows, their database, when they are due (monotonic),
    when to try next, how many tries so far, and when to leave them to the sweeper."""

    ids: list[int]
    using: str | None
    due: float
    next_try: float
    tries: int
    give_up: float
    generation: int

    @classmethod
    def after_first_try(
        cls, ids: list[int], using: str | None, due: float, generation: int
    ) -> _Retry:
        now = time.monotonic()
        return cls(ids, using, due, now + 1.0, 1, now + conf.SWEEP_GRACE, generation)


class Publisher:
    """A daemon thread that publishes what committed transactions hand it, and tries again
    what could not be published."""

    def __init__(self, publish: PublishNow, publish_chunks: PublishChunks) -> None:
        #: ``publish(ids, using=...)``: on the calling thread, for what need not wait.
        self._publish_now = publish
        #: ``publish_chunks(ids, countdown, using)``: the chunks that could not be published.
        self._publish_chunks = publish_chunks
        self._queue: queue.SimpleQueue[tuple[list[int], str | None] | _Retry] = queue.SimpleQueue()
        self._retries: list[_Retry] = []  # the thread's own
        self._generation = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._unfinished = 0
        self._thread: threading.Thread | None = None
        self._pid = 0

    def submit(self, event_ids: list[int], using: str | None = None) -> None:
        if not event_ids:
            return
        if conf.ENQUEUE == "inline" or not _in_background():
            self._publish_now(event_ids, using=using)
            return
        with self._lock:
            self._ensure_thread()
            self._unfinished += 1
        self._queue.put((event_ids, using))

    def retry(self, ids: list[int], using: str | None, due: float) -> None:
        """Publish ``ids`` again soon, with a countdown to ``due`` (``time.monotonic()``)."""
        job = _Retry.after_first_try(ids, using, due, self._generation)
        with self._lock:
            self._ensure_thread()
        self._queue.put(job)

    def _ensure_thread(self) -> None:
        # A forked child (a prefork server) inherits no running thread: start its own.
        if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
            self._queue = queue.SimpleQueue()
            self._retries = []
            self._unfinished = 0
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name="supalytics-publisher", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            self._retries = [r for r in self._retries if r.generation == self._generation]
            timeout = None
            if self._retries:
                timeout = max(0.0, min(r.next_try for r in self._retries) - time.monotonic())
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._try_again()
                continue
            if isinstance(first, _Retry):
                self._retries.append(first)
                continue
            batches = [first]
            # Collect what commits in the next few milliseconds too: under load, one message
            # (and one broker round trip, the costly part) covers many transactions. Asleep,
            # not waiting on the queue: a commit meanwhile does not wake this thread (and take
            # the GIL from the request) for each batch.
            time.sleep(COALESCE_SECONDS)
            while len(batches) < 1000:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Retry):
                    self._retries.append(item)
                else:
                    batches.append(item)
            by_alias: dict[str | None, list[int]] = {}
            for ids, using in batches:
                by_alias.setdefault(using, []).extend(ids)
            generation = self._generation
            try:
                for using, ids in by_alias.items():
                    failed = self._publish_chunks(ids, None, using)
                    now = time.monotonic()
                    self._retries += [
                        _Retry.after_first_try(chunk, using, now, generation) for chunk in failed
                    ]
            finally:
                with self._idle:
                    self._unfinished -= len(batches)
                    self._idle.notify_all()

    def _try_again(self) -> None:
        now = time.monotonic()
        waiting = []
        for job in self._retries:
            if job.generation != self._generation:
                continue
            if job.next_try > now:
                waiting.append(job)
                continue
            countdown = max(0.0, job.due - now) or None
            if not self._publish_chunks(job.ids, countdown, job.using):
                logger.info(
                    "supalytics: enqueued %d event(s) on try %d", len(job.ids), job.tries + 1
                )
                continue
            if now >= job.give_up:
                logger.warning(
                    "supalytics: could not enqueue %d event(s) in %d tries; the sweeper will "
                    "pick them up",
                    len(job.ids),
                    job.tries + 1,
                )
                continue
            job.tries += 1
            job.next_try = now + min(PUBLISH_RETRY_MAX, 2.0 ** (job.tries - 1))
            waiting.append(job)
        self._retries = waiting

    def discard_retries(self) -> None:
        """Forget the publishes waiting to be tried again (the sweeper will cover their rows);
        for tests, which must not see another test's messages."""
        self._generation += 1

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far is published; True if it was in time."""
        with self._idle:
            return self._idle.wait_for(lambda: self._unfinished <= 0, timeout)


def _in_background() -> bool:
    """Whether the backend's hand-over belongs on the publisher thread (a broker round trip)."""
    try:
        return get_backend().publish_in_background
    except Exception:  # misconfigured: publish() says so
        return False
