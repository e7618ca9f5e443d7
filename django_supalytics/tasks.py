"""Celery tasks. Each works from the database row; Celery's own retry state is never used."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task

from . import delivery
from .conf import conf

logger = logging.getLogger("django_supalytics")

#: The sweeper leaves rows alone until they have been due this long: their own message is
#: probably still on its way.
SWEEP_GRACE_SECONDS = 60.0
SWEEP_LIMIT = 1000


def enqueue(event_id: int, countdown: float | None = None) -> bool:
    """Ask a worker to deliver ``event_id``; never raises (the sweeper covers a lost message)."""
    try:
        options: dict[str, Any] = {"retry": False}
        if countdown:
            options["countdown"] = countdown
        if conf.TASK_QUEUE:
            options["queue"] = conf.TASK_QUEUE
        deliver_event.apply_async((event_id,), **options)
    except Exception:
        logger.warning(
            "supalytics: could not enqueue event %s; the sweeper will pick it up",
            event_id,
            exc_info=True,
        )
        return False
    return True


@shared_task(name="django_supalytics.tasks.deliver_event", ignore_result=True)
def deliver_event(event_id: int) -> str:
    """Deliver one outbox row, if it is due and no other worker holds it."""
    result = delivery.deliver(event_id)
    # Short waits are re-enqueued here; long ones are left to the sweeper, so that no
    # countdown comes near a broker's visibility timeout.
    if result.retry_in is not None and result.retry_in <= conf.MAX_COUNTDOWN:
        enqueue(event_id, countdown=result.retry_in)
    return result.outcome


@shared_task(name="django_supalytics.tasks.sweep_outbox", ignore_result=True)
def sweep_outbox() -> dict[str, int]:
    """Reclaim expired leases, and re-enqueue rows that have been due for a while."""
    reclaimed = delivery.reclaim_expired()
    pks = list(delivery.due(SWEEP_GRACE_SECONDS).values_list("pk", flat=True)[:SWEEP_LIMIT])
    enqueued = sum(enqueue(pk) for pk in pks)
    if reclaimed or enqueued:
        logger.info("supalytics sweep: %d leases reclaimed, %d re-enqueued", reclaimed, enqueued)
    return {"reclaimed": reclaimed, "enqueued": enqueued}


@shared_task(name="django_supalytics.tasks.purge_outbox", ignore_result=True)
def purge_outbox(**kwargs: Any) -> int:
    """Delete sent rows older than ``RETENTION_DAYS``, in batches."""
    return delivery.purge(timedelta(days=conf.RETENTION_DAYS), **kwargs)
