"""``DELIVERY_BACKEND = "celery"`` (the default): ``deliver_event`` / ``deliver_events`` on the
project's Celery workers."""

from __future__ import annotations

import logging
from typing import Any

from django.core.checks import CheckMessage, Warning

from ..conf import conf
from .base import BaseDeliveryBackend

logger = logging.getLogger("django_supalytics")


class CeleryBackend(BaseDeliveryBackend):
    """One message per hand-over: ``deliver_event(id)`` for a single row of the outbox's
    database, else ``deliver_events(ids[, using])``, on ``TASK_QUEUE`` if set."""

    delivered_by = "the Celery worker"

    @property
    def runs_inline(self) -> bool:
        """Celery's eager mode (``task_always_eager``): ``apply_async`` runs the task at once."""
        from celery import current_app

        return bool(current_app.conf.task_always_eager)

    @property
    def supports_defer(self) -> bool:
        return not self.runs_inline  # eager mode ignores a countdown

    @property
    def publish_in_background(self) -> bool:
        return not self.runs_inline  # a broker round trip, unless there is no broker

    def enqueue(
        self, event_ids: list[int], countdown: float | None = None, using: str | None = None
    ) -> bool:
        from ..tasks import deliver_event, deliver_events

        task: Any = deliver_events
        args: tuple[Any, ...] = (event_ids,) if using is None else (event_ids, using)
        if using is None and len(event_ids) == 1:
            task, args = deliver_event, (event_ids[0],)
        # Celery's own publish retries stay off: the publisher is the one retry layer.
        options: dict[str, Any] = {"retry": False}
        if countdown:
            options["countdown"] = countdown
        if conf.TASK_QUEUE:
            options["queue"] = conf.TASK_QUEUE
        try:
            task.apply_async(args, **options)
        except Exception:
            logger.warning(
                "supalytics: could not enqueue %s%r; trying again", task.name, args, exc_info=True
            )
            return False
        return True

    def check(self) -> list[CheckMessage]:
        from celery import current_app

        if current_app.main in (None, "default"):
            return [
                Warning(
                    "DELIVERY_BACKEND is 'celery', but no Celery app is configured: "
                    "deliveries would go to Celery's default app and broker.",
                    hint="Define a Celery app that reads Django's settings and calls "
                    "autodiscover_tasks(), or choose DELIVERY_BACKEND 'django_tasks' or 'cron'.",
                    id="supalytics.W005",
                )
            ]
        return []
