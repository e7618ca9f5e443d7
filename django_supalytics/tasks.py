"""Celery tasks. Each works from the database row; Celery's own retry state is never used."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from celery.signals import worker_init, worker_shutting_down

from . import delivery, shutdown
from .conf import conf
from .dispatch import publish, requeue
from .models import OutboxEvent, outbox_aliases

logger = logging.getLogger("django_supalytics")


def sweep_limit() -> int:
    """Rows one sweep re-enqueues: a minute of sending at ``RATE_LIMIT``, so that a sweeper on
    a 30-60 s beat can hand over a backlog as fast as the API takes it."""
    return max(conf.BATCH_SIZE, int(conf.RATE_LIMIT * 60))


#: Options of the delivery tasks. No Celery retries: the database is waited out by
#: ``queryset.retrying``, the broker by the publisher, the limiter's Redis by a pause; what is
#: left is the sweeper's. The row, not Celery's state, decides what is sent.
_DELIVERY_TASK: dict[str, Any] = {"ignore_result": True}

# A warm shutdown (SIGTERM) reaches the sends of every pool process: they stop claiming.
worker_init.connect(shutdown.arm, weak=False)
worker_shutting_down.connect(shutdown.request, weak=False)


def _may_drain(task: Any) -> bool:
    """Whether the running task may go on to other due rows: not when it runs eagerly (Celery's
    eager mode, ``apply()``), on the thread that committed, where only its own rows belong."""
    return not getattr(task.request, "is_eager", False)


@shared_task(name="django_supalytics.tasks.deliver_event", **_DELIVERY_TASK)
def deliver_event(event_id: int) -> str:
    """Deliver one outbox row, if it is due and no other worker holds it (and then, if more
    rows are due, those: ``deliver_many``'s ``drain``)."""
    results = delivery.deliver_many([event_id], drain=_may_drain(deliver_event))
    requeue(results)
    return next(result.outcome.value for result in results if result.event_id == event_id)


@shared_task(name="django_supalytics.tasks.deliver_events", **_DELIVERY_TASK)
def deliver_events(event_ids: list[int], using: str | None = None) -> dict[str, int]:
    """Deliver the given outbox rows (those due and free), longest due first, claimed at once,
    from the database ``using`` (default: the router's for ``OutboxEvent``); then, if more rows
    are due there, those (``deliver_many``'s ``drain``)."""
    results = delivery.deliver_many(list(event_ids), using=using, drain=_may_drain(deliver_events))
    requeue(results, using)
    return delivery.count_outcomes(results)


@shared_task(name="django_supalytics.tasks.sweep_outbox", ignore_result=True)
def sweep_outbox() -> dict[str, int]:
    """Reclaim expired leases, and re-enqueue rows that have been due for a while, in every
    outbox database."""
    reclaimed = enqueued = 0
    for alias in outbox_aliases():
        rows = OutboxEvent.objects.using(alias)
        reclaimed += rows.reclaim_expired()
        # Rows due for less than SWEEP_GRACE probably have their own message on its way.
        due = rows.due(conf.SWEEP_GRACE).order_by("priority", "next_attempt_at", "pk")
        pks = list(due.values_list("pk", flat=True)[: sweep_limit()])
        enqueued += len(pks) if publish(pks, using=alias) else 0
    if reclaimed or enqueued:
        logger.info("supalytics sweep: %d leases reclaimed, %d re-enqueued", reclaimed, enqueued)
    return {"reclaimed": reclaimed, "enqueued": enqueued}


@shared_task(name="django_supalytics.tasks.purge_outbox", ignore_result=True)
def purge_outbox(**kwargs: Any) -> int:
    """Delete sent rows older than ``RETENTION_DAYS`` and failed ones older than
    ``FAILED_RETENTION_DAYS``, in batches."""
    return purge_expired(**kwargs)


def purge_expired(using: str | None = None, batch_size: int | None = None) -> int:
    """The scheduled purge: sent rows past ``RETENTION_DAYS``, failed ones past
    ``FAILED_RETENTION_DAYS`` (by when they failed), in every outbox database."""
    failed_days = conf.FAILED_RETENTION_DAYS
    sent_age = timedelta(days=conf.RETENTION_DAYS)
    failed_age = None if failed_days is None else timedelta(days=failed_days)
    total = 0
    for alias in [using] if using else outbox_aliases():
        rows = OutboxEvent.objects.using(alias).purgeable(sent_age, failed_age)
        total += rows.purge(batch_size) if batch_size else rows.purge()
    return total
