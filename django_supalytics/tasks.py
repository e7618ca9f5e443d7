"""Celery tasks. Each works from the database row; Celery's own retry state is never used."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import delivery, dispatch
from .conf import conf
from .dispatch import publish, requeue

logger = logging.getLogger("django_supalytics")


def sweep_limit() -> int:
    """Rows one sweep re-enqueues: a minute of sending at ``RATE_LIMIT``, so that a sweeper on
    a 30-60 s beat can hand over a backlog as fast as the API takes it."""
    return max(conf.BATCH_SIZE, int(conf.RATE_LIMIT * 60))


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Errors a delivery task retries itself for, within seconds: the database (a lock, a
    dropped connection), the limiter's Redis, the broker. Anything else is a bug, and raises."""
    errors: list[type[BaseException]] = [OperationalError, InterfaceError]
    try:
        from kombu.exceptions import OperationalError as BrokerError

        errors.append(BrokerError)
    except ImportError:  # pragma: no cover - kombu comes with Celery
        pass
    try:
        from redis.exceptions import ConnectionError, TimeoutError

        errors += [ConnectionError, TimeoutError]
    except ImportError:  # redis is an extra
        pass
    return tuple(errors)


#: Options of the delivery tasks: a transient error re-runs the task (the same message, the
#: same queue) after 1, 2, 4, ... seconds with jitter, at most ``TRANSIENT_RETRY_MAX`` apart,
#: ``TRANSIENT_RETRIES`` times; past that the sweeper is the net. The row, not Celery's retry
#: state, still decides what is sent: a retried task only claims rows that are due and free.
TRANSIENT_RETRIES = 10
TRANSIENT_RETRY_MAX = 10
_DELIVERY_TASK: dict[str, Any] = {
    "ignore_result": True,
    "autoretry_for": _transient_errors(),
    "max_retries": TRANSIENT_RETRIES,
    "retry_backoff": 1,
    "retry_backoff_max": TRANSIENT_RETRY_MAX,
    "retry_jitter": True,
}


def _may_drain(task: Any) -> bool:
    """Whether the running task may go on to other due rows: not when it runs eagerly (Celery's
    eager mode, ``apply()``), on the thread that committed, where only its own rows belong."""
    return not getattr(task.request, "is_eager", False)


def enqueue(event_id: int, countdown: float | None = None) -> bool:
    """Ask a worker to deliver ``event_id``; never raises (the sweeper covers a lost message)."""
    return dispatch.apply_task(deliver_event, (event_id,), countdown)


def send_chunk(event_ids: list[int], countdown: float | None, using: str | None) -> bool:
    """Publish one message for ``event_ids`` (the ``"celery"`` backend of ``dispatch``)."""
    if using is not None:
        return dispatch.apply_task(deliver_events, (event_ids, using), countdown)
    if len(event_ids) == 1:
        return dispatch.apply_task(deliver_event, (event_ids[0],), countdown)
    return dispatch.apply_task(deliver_events, (event_ids,), countdown)


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
    for alias in delivery.outbox_aliases():
        reclaimed += delivery.reclaim_expired(alias)
        # Rows due for less than SWEEP_GRACE probably have their own message on its way.
        pks = list(
            delivery.due(conf.SWEEP_GRACE, alias).values_list("pk", flat=True)[: sweep_limit()]
        )
        enqueued += len(pks) if publish(pks, using=alias) else 0
    if reclaimed or enqueued:
        logger.info("supalytics sweep: %d leases reclaimed, %d re-enqueued", reclaimed, enqueued)
    return {"reclaimed": reclaimed, "enqueued": enqueued}


@shared_task(name="django_supalytics.tasks.purge_outbox", ignore_result=True)
def purge_outbox(**kwargs: Any) -> int:
    """Delete sent rows older than ``RETENTION_DAYS`` and failed ones older than
    ``FAILED_RETENTION_DAYS``, in batches."""
    return delivery.purge_expired(**kwargs)
