"""Delivery through Django's Tasks framework: ``SUPALYTICS["DELIVERY_BACKEND"] = "django_tasks"``.

The task runs on the project's ``TASKS`` backend (``django.tasks`` on Django 6.0+, the
``django-tasks`` backport on 5.2), for example django-tasks-db's ``DatabaseBackend`` and its
``db_worker``: a deployment with no broker at all. The framework has no retry API, so retries,
backoff and the rate limit stay in the outbox, as with Celery: a task only says "look at these
rows". Waits are deferred with ``run_after`` when the backend ``supports_defer``; otherwise, and
for lost tasks, the periodic ``supalytics_drain`` is the net. Imported only when chosen.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import InterfaceError, OperationalError
from django.utils import timezone

from . import delivery
from .conf import conf

try:
    from django.tasks import task  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import task  # type: ignore[no-redef, unused-ignore]

logger = logging.getLogger("django_supalytics")

#: A task that met a transient database error is enqueued again this many seconds later.
TRANSIENT_RETRY_DELAY = 2.0


@task()
def deliver_events(event_ids: list[int], using: str | None = None) -> dict[str, int]:
    """Deliver the given outbox rows (those due and free) from the database ``using``."""
    from .dispatch import publish, requeue

    try:
        results = delivery.deliver_many(
            [int(pk) for pk in event_ids], using=using, drain=not _runs_inline()
        )
    except (OperationalError, InterfaceError):
        logger.warning("supalytics: delivery task failed; enqueued again", exc_info=True)
        publish(list(event_ids), countdown=TRANSIENT_RETRY_DELAY, using=using)
        return {"retried": len(event_ids)}
    requeue(results, using)
    return delivery.count_outcomes(results)


def _runs_inline() -> bool:
    """Whether the backend runs tasks as they are enqueued (``ImmediateBackend``): then a task
    runs on the committing thread, and only its own rows belong there."""
    # By name: the class lives in django.tasks on 6.x and in the django_tasks backport.
    backend = type(deliver_events.get_backend())
    return any(cls.__name__ == "ImmediateBackend" for cls in backend.__mro__)


def send_chunk(event_ids: list[int], countdown: float | None, using: str | None) -> bool:
    """Enqueue ``deliver_events`` (the ``"django_tasks"`` backend of ``dispatch``); False if
    it could not, to be tried again."""
    try:
        enqueue(event_ids, countdown, using)
    except Exception:
        logger.warning(
            "supalytics: could not enqueue deliver_events%r; trying again",
            (event_ids,),
            exc_info=True,
        )
        return False
    return True


def enqueue(event_ids: list[int], countdown: float | None = None, using: str | None = None) -> bool:
    """Enqueue ``deliver_events``; True if it was. A wait needs a backend that
    ``supports_defer``: without, the rows are left to ``supalytics_drain`` (False)."""
    options: dict[str, Any] = {}
    if conf.TASK_QUEUE:
        options["queue_name"] = conf.TASK_QUEUE
    if countdown:
        if not deliver_events.get_backend().supports_defer:
            return False  # left to supalytics_drain: enqueuing now would only bounce
        options["run_after"] = timezone.now() + timedelta(seconds=countdown)
    task_ = deliver_events.using(**options) if options else deliver_events
    if using is None:
        task_.enqueue(event_ids)
    else:
        task_.enqueue(event_ids, using)
    return True
