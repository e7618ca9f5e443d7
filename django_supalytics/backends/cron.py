"""``DELIVERY_BACKEND = "cron"`` (``"none"`` is its old name): rows wait for
``supalytics_drain``, run from cron, which sends what is due."""

from __future__ import annotations

from .base import BaseDeliveryBackend


class CronBackend(BaseDeliveryBackend):
    """Hands nothing over and logs nothing: committed rows stay ``pending`` until the next
    ``supalytics_drain``."""

    delivered_by = "the next supalytics_drain (DELIVERY_BACKEND is 'cron')"

    def enqueue(
        self, event_ids: list[int], countdown: float | None = None, using: str | None = None
    ) -> bool:
        return True
