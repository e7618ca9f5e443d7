"""Getting committed event IDs to Celery without making the request wait for the broker.

``track()`` collects the IDs of one transaction and hands them over once, on commit. By default
(``ENQUEUE = "background"``) a daemon thread of the process publishes them, grouped into
``deliver_events`` messages of up to ``BATCH_SIZE`` IDs: the request pays for a queue append,
not a broker round trip, and a broker that is slow or down cannot stall it. If the process dies
before the thread publishes, the rows are committed and ``pending``: the sweeper sends them.
``ENQUEUE = "inline"`` publishes on the committing thread instead (and Celery's eager mode always
does).

A publish that fails (the broker is down or restarting), on commit or when a task hands rows
back, is not left to the sweeper: the same thread tries it again after 1, 2, 4 … seconds (at
most ``PUBLISH_RETRY_MAX`` apart) for up to ``SWEEP_GRACE``, keeping the countdown's due time,
so the rows go within seconds of the broker's return. Past that, or if the process exits, the
rows are committed and ``pending``, and the sweeper re-enqueues them.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import connections
from django.utils.module_loading import import_string

from .conf import conf

if TYPE_CHECKING:
    from .delivery import Result

logger = logging.getLogger("django_supalytics")

#: How long the publisher gathers commits before one publish: the added delivery latency.
COALESCE_SECONDS = 0.02
#: Longest wait between two tries of a publish that failed.
PUBLISH_RETRY_MAX = 10.0


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
            "supalytics: could not enqueue %s%r; trying again",
            task.name,
            args,
            exc_info=True,
        )
        return False
    return True


def publish(
    event_ids: list[int],
    countdown: float | None = None,
    using: str | None = None,
    retry: bool = True,
) -> bool:
    """Enqueue delivery of ``event_ids`` in messages of up to ``BATCH_SIZE``, on the
    ``DELIVERY_BACKEND``; True if every message went out. Never raises.

    Rows in a database other than the outbox's default (``track(using=...)``) are named with
    their alias in the message, so that the worker claims them there. Messages that could not
    go out are tried again by the publisher thread (``retry``), within seconds.
    """
    failed = _publish(event_ids, countdown, using)
    if failed and retry:
        due = time.monotonic() + (countdown or 0.0)
        for chunk in failed:
            publisher.retry(chunk, using, due)
    return not failed


#: What hands a chunk of IDs to each ``DELIVERY_BACKEND``: ``f(ids, countdown, using) -> bool``,
#: False when it could not (to be tried again). Named, not imported: the backends' modules
#: define the tasks, and they import this one.
BACKENDS = {
    "celery": "django_supalytics.tasks.send_chunk",
    "django_tasks": "django_supalytics.tasks_framework.send_chunk",
}


def _publish(event_ids: list[int], countdown: float | None, using: str | None) -> list[list[int]]:
    """Publish in chunks; the chunks that did not go out."""
    from .models import outbox_alias

    backend = conf.DELIVERY_BACKEND
    if backend not in BACKENDS:
        return []  # "none": rows wait for supalytics_drain
    alias = using if using is not None and using != outbox_alias() else None
    size = conf.BATCH_SIZE
    failed = []
    for start in range(0, len(event_ids), size):
        chunk = event_ids[start : start + size]
        try:
            ok = bool(import_string(BACKENDS[backend])(chunk, countdown, alias))
        except Exception:  # the backend's module or its framework is missing (checks say so)
            logger.warning(
                "supalytics: could not enqueue %r on %s; trying again",
                chunk,
                backend,
                exc_info=True,
            )
            ok = False
        if not ok:
            failed.append(chunk)
    return failed


def requeue(results: list[Result], using: str | None = None) -> None:
    """Enqueue again what is due again soon; longer waits are left to the sweeper, so that no
    countdown comes near a broker's visibility timeout."""
    by_wait: dict[float, list[int]] = {}
    for result in results:
        if result.retry_in is not None and result.retry_in <= conf.MAX_COUNTDOWN:
            # Rounded up, so that the message never arrives before the row is due.
            wait = math.ceil(result.retry_in * 10) / 10 + 0.05
            by_wait.setdefault(wait, []).append(result.event_id)
    for wait, ids in by_wait.items():
        publish(ids, countdown=wait, using=using)


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

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[list[int], str | None] | _Retry] = queue.SimpleQueue()
        self._retries: list[_Retry] = []  # the thread's own
        self._generation = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._unfinished = 0
        self._thread: threading.Thread | None = None
        self._pid = 0

    def submit(self, event_ids: list[int], using: str | None = None) -> None:
        backend = conf.DELIVERY_BACKEND
        if not event_ids or backend == "none":
            return
        # Django's Tasks framework enqueues in the database, or runs the task at once: no
        # broker round trip to keep off the committing thread.
        if conf.ENQUEUE == "inline" or backend == "django_tasks" or _celery_is_eager():
            publish(event_ids, using=using)
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
                    failed = _publish(ids, None, using)
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
            if not _publish(job.ids, countdown, job.using):
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
