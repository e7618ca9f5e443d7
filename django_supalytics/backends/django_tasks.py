"""``DELIVERY_BACKEND = "django_tasks"``: ``deliver_events`` as a task of Django's Tasks
framework, on the project's ``TASKS`` backend (``django.tasks`` on Django 6.0+, the
``django-tasks`` backport on 5.2), e.g. django-tasks-db's ``DatabaseBackend``: no broker."""

from __future__ import annotations

import contextlib
import functools
import logging
from datetime import timedelta
from importlib import import_module
from typing import Any

from django.core.checks import CheckMessage, Error
from django.utils import timezone

from ..conf import conf
from .base import BaseDeliveryBackend

logger = logging.getLogger("django_supalytics")


@functools.cache
def _immediate_backends() -> tuple[type, ...]:
    """``ImmediateBackend`` of whichever framework is installed: it runs a task as it is
    enqueued."""
    classes = []
    for module in ("django.tasks.backends.immediate", "django_tasks.backends.immediate"):
        with contextlib.suppress(ImportError):
            classes.append(import_module(module).ImmediateBackend)
    return tuple(classes)


def _task_backend() -> Any:
    from ..tasks_framework import deliver_events

    return deliver_events.get_backend()


class DjangoTasksBackend(BaseDeliveryBackend):
    """One ``deliver_events`` task per hand-over, on ``TASK_QUEUE`` (its ``queue_name``) if set;
    a countdown becomes ``run_after`` when the ``TASKS`` backend ``supports_defer``. Enqueued on
    the committing thread: with a database backend that is one INSERT, no broker round trip."""

    delivered_by = "a worker of the Tasks framework (the project's TASKS backend)"

    @property
    def runs_inline(self) -> bool:
        return isinstance(_task_backend(), _immediate_backends())

    @property
    def supports_defer(self) -> bool:
        return bool(_task_backend().supports_defer) and not self.runs_inline

    def enqueue(
        self, event_ids: list[int], countdown: float | None = None, using: str | None = None
    ) -> bool:
        options: dict[str, Any] = {}
        if conf.TASK_QUEUE:
            options["queue_name"] = conf.TASK_QUEUE
        if countdown:
            options["run_after"] = timezone.now() + timedelta(seconds=countdown)
        try:
            from ..tasks_framework import deliver_events

            task = deliver_events.using(**options) if options else deliver_events
            if using is None:
                task.enqueue(event_ids)
            else:
                task.enqueue(event_ids, using)
        except Exception:
            logger.warning(
                "supalytics: could not enqueue deliver_events%r; trying again",
                (event_ids,),
                exc_info=True,
            )
            return False
        return True

    def check(self) -> list[CheckMessage]:
        from importlib.util import find_spec

        if find_spec("django.tasks") is None and find_spec("django_tasks") is None:
            return [
                Error(
                    "DELIVERY_BACKEND is 'django_tasks', but Django's Tasks framework is not "
                    "available (it comes with Django 6.0).",
                    hint="Upgrade to Django 6.0+, or on Django 5.2 pip install django-tasks "
                    "(the backport) and add 'django_tasks' to INSTALLED_APPS.",
                    id="supalytics.E017",
                )
            ]
        try:
            _task_backend()
        except Exception as exc:
            return [
                Error(
                    f"DELIVERY_BACKEND is 'django_tasks', but the TASKS backend cannot be "
                    f"loaded: {exc}",
                    hint="Configure settings.TASKS, e.g. django-tasks-db's DatabaseBackend.",
                    id="supalytics.E018",
                )
            ]
        return []
