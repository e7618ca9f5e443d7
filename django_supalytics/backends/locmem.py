"""``DELIVERY_BACKEND = "locmem"``: hand-overs recorded in memory, for tests, as
``django.core.mail``'s locmem backend fills ``mail.outbox``."""

from __future__ import annotations

from dataclasses import dataclass

from .base import BaseDeliveryBackend


@dataclass(frozen=True)
class HandOver:
    """One ``enqueue()``: the row IDs, the countdown, the database (None: the outbox's)."""

    event_ids: tuple[int, ...]
    countdown: float | None = None
    using: str | None = None


#: Every hand-over of the process, in order. Tests clear it (``outbox.clear()``); the
#: ``supalytics_events`` fixture and ``capture_events()`` leave it as it is.
outbox: list[HandOver] = []


class LocmemBackend(BaseDeliveryBackend):
    """Records each hand-over in ``outbox``; nothing reaches a queue, nothing is delivered."""

    supports_defer = True  # the countdown is recorded
    delivered_by = "nobody: the locmem backend only records hand-overs (tests)"

    def enqueue(
        self, event_ids: list[int], countdown: float | None = None, using: str | None = None
    ) -> bool:
        outbox.append(HandOver(tuple(event_ids), countdown, using))
        return True
