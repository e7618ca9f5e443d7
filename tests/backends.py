"""A delivery backend for tests, chosen by its dotted path as a project's own would be."""

from __future__ import annotations

from typing import ClassVar

from django_supalytics.backends.locmem import HandOver, LocmemBackend


class FlakyBackend(LocmemBackend):
    """A broker: handed over by the publisher thread, and down for the next ``refusals``
    tries (``math.inf``: for good). Every try is in ``tries``; those that went, in
    ``locmem.outbox`` too."""

    tries: ClassVar[list[HandOver]] = []
    refusals: ClassVar[float] = 0

    publish_in_background = True

    @classmethod
    def reset(cls) -> None:
        cls.tries.clear()
        cls.refusals = 0

    def enqueue(
        self, event_ids: list[int], countdown: float | None = None, using: str | None = None
    ) -> bool:
        type(self).tries.append(HandOver(tuple(event_ids), countdown, using))
        if type(self).refusals > 0:
            type(self).refusals -= 1
            raise ConnectionError("broker down")
        return super().enqueue(event_ids, countdown, using)


class NoDefer(LocmemBackend):
    """A queue that cannot run a task later."""

    supports_defer = False
