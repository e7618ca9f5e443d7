"""Celery tasks. Each works from the database row; Celery's own retry state is never used."""

from __future__ import annotations

import logging
import math
from typing import Any

from celery import shared_task

from . import delivery
from .conf import conf
from .dispatch import apply_task, publish

logger = logging.getLogger("django_supalytics")

SWEEP_LIMIT = 1000


def enqueue(event_id: int, countdown: float | None = None) -> bool:
    """Ask a worker to deliver ``event_id``; never raises (the sweeper covers a lost message)."""
    return apply_task(deliver_event, (event_id,), countdown)


def _requeue(results: list[delivery.Result], using: str | None = None) -> None:
    """Re-enqueue what is due again soon; longer waits are left to the sweeper, so that no
    countdown comes near a broker's visibility timeout."""
    by_wait: dict[float, list[int]] = {}
    for result in results:
        if result.retry_in is not None and result.retry_in <= conf.MAX_COUNTDOWN:
            # Rounded up, so that the message never arrives before the row is due.
            wait = math.ceil(result.retry_in * 10) / 10 + 0.05
            by_wait.setdefault(wait, []).append(result.event_id)
    for wait, ids in by_wait.items():
        publish(ids, countdown=wait, using=using)


@shared_task(name="django_supalytics.tasks.deliver_event", ignore_result=True)
def deliver_event(event_id: int) -> str:
    """Deliver one outbox row, if it is due and no other worker holds it."""
    result = delivery.deliver(event_id)
    _requeue([result])
    return result.outcome


@shared_task(name="django_supalytics.tasks.deliver_events", ignore_result=True)
def deliver_events(event_ids: list[int], using: str | None = None) -> dict[str, int]:
    """Deliver the given outbox rows (those due and free), longest due first, claimed at once, from
    the database ``using`` (default: the router's for ``OutboxEvent``)."""
    results = delivery.deliver_many(list(event_ids), using=using)
    _requeue(results, using)
    outcomes: dict[str, int] = {}
    for result in results:
        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
    return outcomes


@shared_task(name="django_supalytics.tasks.sweep_outbox", ignore_result=True)
def sweep_outbox() -> dict[str, int]:
    """Reclaim expired leases, and re-enqueue rows that have been due for a while, in every
    outbox database."""
    reclaimed = enqueued = 0
    for alias in delivery.outbox_aliases():
        reclaimed += delivery.reclaim_expired(alias)
        # Rows due for less than SWEEP_GRACE probably have their own message on its way.
        pks = list(delivery.due(conf.SWEEP_GRACE, alias).values_list("pk", flat=True)[:SWEEP_LIMIT])
        enqueued += len(pks) if publish(pks, using=alias) else 0
    if reclaimed or enqueued:
        logger.info("supalytics sweep: %d leases reclaimed, %d re-enqueued", reclaimed, enqueued)
    return {"reclaimed": reclaimed, "enqueued": enqueued}


@shared_task(name="django_supalytics.tasks.purge_outbox", ignore_result=True)
def purge_outbox(**kwargs: Any) -> int:
    """Delete sent rows older than ``RETENTION_DAYS`` and failed ones older than
    ``FAILED_RETENTION_DAYS``, in batches."""
    return delivery.purge_expired(**kwargs)
