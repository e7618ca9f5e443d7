"""Getting committed event IDs to the delivery backend without making the request wait.

``track()`` collects the IDs of one transaction and hands them over once, on commit, to the
``DELIVERY_BACKEND`` (``backends.get_backend()``) in chunks of up to ``BATCH_SIZE``. A backend
that ``publish_in_background`` (Celery, not in eager mode) is given them by a daemon thread of
the process (with ``ENQUEUE = "background"``, the default): the request pays for a queue append,
not a broker round trip, and a broker that is slow or down cannot stall it. If the process dies
before the thread publishes, the rows are committed and ``pending``: the sweeper sends them.
Other backends, and ``ENQUEUE = "inline"``, hand over on the committing thread.

A hand-over that fails (the broker is down or restarting), on commit or when a task hands rows
back, is not left to the sweeper: the publisher thread (``publisher.py``) tries it again after
1, 2, 4 … seconds (at most ``PUBLISH_RETRY_MAX`` apart) for up to ``SWEEP_GRACE``, keeping the
countdown's due time, so the rows go within seconds of the broker's return. Past that, or if
the process exits, the rows are committed and ``pending``, and the sweeper re-enqueues them.
"""

from __future__ import annotations

import atexit
import logging
import math
import time
from typing import TYPE_CHECKING

from django.core.cache import caches
from django.db import connections

from .backends import get_backend
from .conf import conf
from .publisher import Publisher

if TYPE_CHECKING:
    from .delivery import Result

logger = logging.getLogger("django_supalytics")


def publish(
    event_ids: list[int],
    countdown: float | None = None,
    using: str | None = None,
) -> bool:
    """Hand ``event_ids`` to the ``DELIVERY_BACKEND`` in chunks of up to ``BATCH_SIZE``; True
    if every chunk went. Never raises.

    Rows in a database other than the outbox's default (``track(using=...)``) are handed over
    with their alias, so that the worker claims them there. Chunks the backend refused are
    tried again by the publisher thread, within seconds: the one retry layer for the broker.
    A countdown the backend cannot honour (``supports_defer``) hands nothing over: the rows
    wait for their next delivery, the sweeper or ``supalytics_drain``.
    """
    return bool(event_ids) and _hand_over(event_ids, countdown, using)


def _hand_over(event_ids: list[int], countdown: float | None, using: str | None) -> bool:
    failed = _publish(event_ids, countdown, using)
    due = time.monotonic() + (countdown or 0.0)
    for chunk in failed:
        publisher.retry(chunk, using, due)
    return not failed


def _publish(event_ids: list[int], countdown: float | None, using: str | None) -> list[list[int]]:
    """Hand over in chunks; the chunks that did not go."""
    from .models import outbox_alias

    alias = using if using is not None and using != outbox_alias() else None
    size = conf.BATCH_SIZE
    # No IDs: one message for a drain (wake()).
    chunks = [event_ids[start : start + size] for start in range(0, len(event_ids), size)] or [[]]
    try:
        backend = get_backend()
        # Run now instead, a task handing its rows back would run again at once, and again.
        if countdown and (backend.runs_inline or not backend.supports_defer):
            return []
    except Exception:  # DELIVERY_BACKEND or its framework is misconfigured (checks say so)
        logger.warning("supalytics: no delivery backend; trying again", exc_info=True)
        return chunks
    failed = []
    for chunk in chunks:
        try:
            ok = bool(backend.enqueue(chunk, countdown, alias))
        except Exception:
            logger.warning(
                "supalytics: could not enqueue %r on %s; trying again",
                chunk,
                type(backend).__name__,
                exc_info=True,
            )
            ok = False
        if not ok:
            failed.append(chunk)
    return failed


#: Due times this close share one wake-up, for every worker together.
WAKE_BUCKET = 0.5


def requeue(results: list[Result], using: str | None = None) -> None:
    """Have what is due again soon delivered then: one wake-up (a drain, ``wake()``) for each
    ``WAKE_BUCKET`` of due times. Longer waits than ``MAX_COUNTDOWN`` are left to the sweeper,
    so that no countdown comes near a broker's visibility timeout."""
    now = time.time()
    waits = [r.retry_in for r in results if r.retry_in is not None]
    due = {math.ceil((now + w) / WAKE_BUCKET) for w in waits if w <= conf.MAX_COUNTDOWN}
    for when in sorted(due):
        _wake_at(when, using)


def wake(countdown: float, using: str | None = None) -> bool:
    """Hand over one drain, a message naming no rows, to run in ``countdown`` seconds: it claims
    every row due by then, oldest first. Only the first process to ask for a moment (within
    ``WAKE_BUCKET``, in the limiter's cache) hands it over, so that the rows one outage or one
    pause held back come back as one message, not one per task. True if one went."""
    return _wake_at(math.ceil((time.time() + countdown) / WAKE_BUCKET), using)


def _wake_at(when: int, using: str | None) -> bool:
    """``wake()`` for the half second numbered ``when`` (Unix time ÷ ``WAKE_BUCKET``)."""
    try:
        cache = caches[conf.CACHE_ALIAS]
        key = f"supalytics:wake:{using or ''}:{when}"
        if not cache.add(key, 1, timeout=max(1, math.ceil(when * WAKE_BUCKET - time.time()) + 5)):
            return False
    except Exception:  # no cache to agree in: one message too many is harmless
        logger.warning("supalytics: could not share a wake-up; handing it over", exc_info=True)
    # Rounded up, so that the message never arrives before the rows are due.
    return _hand_over([], max(0.0, when * WAKE_BUCKET - time.time()) + 0.05, using)


publisher = Publisher(publish, _publish)
atexit.register(publisher.flush, 2.0)


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
