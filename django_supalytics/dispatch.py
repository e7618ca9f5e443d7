"""Getting committed event IDs to Celery without making the request wait for the broker.

``track()`` collects the IDs of one transaction and hands them over once, on commit. By default
(``ENQUEUE = "background"``) a daemon thread of the process publishes them, grouped into
``deliver_events`` messages of up to ``BATCH_SIZE`` IDs: the request pays for a queue append,
not a broker round trip, and a broker that is slow or down cannot stall it. If the process dies
before the thread publishes, the rows are committed and ``pending``: the sweeper sends them.
``ENQUEUE = "inline"`` publishes on the committing thread instead (and Celery's eager mode always
does).
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from typing import Any

from django.db import connections

from .conf import conf

logger = logging.getLogger("django_supalytics")

#: How long the publisher gathers commits before one publish: the added delivery latency.
COALESCE_SECONDS = 0.02


def apply_task(task: Any, args: tuple[Any, ...], countdown: float | None = None) -> bool:
    """``task.apply_async`` that never raises: a lost message is the sweeper's to cover."""
    options: dict[str, Any] = {"retry": False}
    if countdown:
        options["countdown"] = countdown
    if conf.TASK_QUEUE:
        options["queue"] = conf.TASK_QUEUE
    try:
        task.apply_async(args, **options)
    except Exception:
        logger.warning(
            "supalytics: could not enqueue %s%r; the sweeper will pick it up",
            task.name,
            args,
            exc_info=True,
        )
        return False
    return True


def publish(event_ids: list[int], countdown: float | None = None, using: str | None = None) -> bool:
    """Enqueue delivery of ``event_ids`` in messages of up to ``BATCH_SIZE``.

    Rows in a database other than the outbox's default (``track(using=...)``) are named with
    their alias in the message, so that the worker claims them there.
    """
    from .models import outbox_alias
    from .tasks import deliver_event, deliver_events

    elsewhere = using is not None and using != outbox_alias()
    size = conf.BATCH_SIZE
    ok = True
    for start in range(0, len(event_ids), size):
        chunk = event_ids[start : start + size]
        if elsewhere:
            ok &= apply_task(deliver_events, (chunk, using), countdown)
        elif len(chunk) == 1:
            ok &= apply_task(deliver_event, (chunk[0],), countdown)
        else:
            ok &= apply_task(deliver_events, (chunk,), countdown)
    return ok


class Publisher:
    """A daemon thread that publishes what committed transactions hand it."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[list[int], str | None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._unfinished = 0
        self._thread: threading.Thread | None = None
        self._pid = 0

    def submit(self, event_ids: list[int], using: str | None = None) -> None:
        if not event_ids:
            return
        if conf.ENQUEUE == "inline" or _celery_is_eager():
            publish(event_ids, using=using)
            return
        with self._lock:
            self._ensure_thread()
            self._unfinished += 1
        self._queue.put((event_ids, using))

    def _ensure_thread(self) -> None:
        # A forked child (a prefork server) inherits no running thread: start its own.
        if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
            self._queue = queue.SimpleQueue()
            self._unfinished = 0
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name="supalytics-publisher", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            batches = [self._queue.get()]
            # Collect what commits in the next few milliseconds too: under load, one message
            # (and one broker round trip, the costly part) covers many transactions. Asleep,
            # not waiting on the queue: a commit meanwhile does not wake this thread (and take
            # the GIL from the request) for each batch.
            time.sleep(COALESCE_SECONDS)
            while len(batches) < 1000:
                try:
                    batches.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            by_alias: dict[str | None, list[int]] = {}
            for ids, using in batches:
                by_alias.setdefault(using, []).extend(ids)
            try:
                for using, ids in by_alias.items():
                    publish(ids, using=using)
            finally:
                with self._idle:
                    self._unfinished -= len(batches)
                    self._idle.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far is published; True if it was in time."""
        with self._idle:
            return self._idle.wait_for(lambda: self._unfinished <= 0, timeout)


publisher = Publisher()
atexit.register(publisher.flush, 2.0)


def _celery_is_eager() -> bool:
    from celery import current_app

    return bool(current_app.conf.task_always_eager)


class _TransactionBatch:
    """The events of one transaction, handed to the publisher once, on commit."""

    def __init__(self, using: str) -> None:
        self.ids: list[int] = []
        self.using = using

    def __call__(self) -> None:
        publisher.submit(self.ids, self.using)


def schedule(event_id: int, using: str) -> None:
    """Have ``event_id`` delivered once the current transaction on ``using`` commits."""
    connection = connections[using]
    if not connection.in_atomic_block:
        publisher.submit([event_id], using)  # autocommit: the row is committed already
        return
    batch = getattr(connection, "_supalytics_batch", None)
    # The batch is reused while its callback is still registered; a rollback discards the
    # callback (and the rows), and the next track() starts a new batch.
    if batch is None or not any(entry[1] is batch for entry in connection.run_on_commit):
        batch = _TransactionBatch(using)
        connection._supalytics_batch = batch  # type: ignore[attr-defined]
        connection.on_commit(batch)
    batch.ids.append(event_id)
