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

from . import delivery

try:
    from django.tasks import task  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import task  # type: ignore[no-redef, unused-ignore]

logger = logging.getLogger("django_supalytics")


@task()
def deliver_events(event_ids: list[int], using: str | None = None) -> dict[str, int]:
    """Deliver the given outbox rows (those due and free) from the database ``using``."""
    from .dispatch import requeue

    ids = [int(pk) for pk in event_ids]
    results = delivery.deliver_many(ids, using=using, drain=not _runs_inline())
    requeue(results, using)
    return delivery.count_outcomes(results)


def _runs_inline() -> bool:
    """Whether the ``TASKS`` backend runs a task as it is enqueued (``ImmediateBackend``): then
    it runs on the committing thread, and only its own rows belong there."""
    from .backends.django_tasks import DjangoTasksBackend

    return DjangoTasksBackend().runs_inline
