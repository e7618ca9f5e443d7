"""Assert on tracked events in your own tests, without network or Celery.

Like Django's ``mail.outbox``: while capturing, events are recorded (validated and written to
the outbox as usual) and handed to the ``"locmem"`` delivery backend, never to a queue. Any
kind of database test works: one wrapped in a transaction (``@pytest.mark.django_db``,
``TestCase``) or one that commits.

    from django_supalytics.testing import capture_events

    with capture_events() as events:
        client.post("/upgrade/", {"plan": "pro"})
    events.assert_tracked("subscription_upgraded", metadata__plan="pro", visitor_id="abc")

pytest: the ``supalytics_events`` fixture. unittest: ``SupalyticsTestMixin``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, overload
from uuid import UUID

from django.conf import settings
from django.db.models.signals import post_save
from django.test import override_settings

from .models import OutboxEvent

_MISSING = object()


def _lookup(event: OutboxEvent, path: str) -> Any:
    value: Any = event
    for part in path.split("__"):
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        else:
            value = getattr(value, part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


class TrackedEvents(Sequence[OutboxEvent]):
    """The events tracked while capturing, in order, leaving out those rolled back.

    An event counts once its ``track()`` returned and for as long as its row exists: in a test
    wrapped in a transaction that never commits (``@pytest.mark.django_db``, ``TestCase``) as
    in one that commits (``transaction=True``). A row whose transaction (or savepoint) rolled
    back is gone, so its event is not listed, as nothing would have been sent for it.
    """

    def __init__(self) -> None:
        self._tracked: list[OutboxEvent] = []

    def _record(self, event: OutboxEvent) -> None:
        self._tracked.append(event)

    def _current(self) -> list[OutboxEvent]:
        if not self._tracked:
            return []
        alive: set[UUID] = set()
        by_db: dict[str, list[UUID]] = {}
        for event in self._tracked:
            by_db.setdefault(event._state.db or "default", []).append(event.uuid)
        for using, uuids in by_db.items():
            alive.update(
                OutboxEvent.objects.using(using)
                .filter(uuid__in=uuids)
                .values_list("uuid", flat=True)
            )
        return [event for event in self._tracked if event.uuid in alive]

    @overload
    def __getitem__(self, index: int) -> OutboxEvent: ...

    @overload
    def __getitem__(self, index: slice) -> list[OutboxEvent]: ...

    def __getitem__(self, index: int | slice) -> OutboxEvent | list[OutboxEvent]:
        return self._current()[index]

    def __len__(self) -> int:
        return len(self._current())

    def __iter__(self) -> Iterator[OutboxEvent]:
        return iter(self._current())

    def __repr__(self) -> str:
        return f"<TrackedEvents {[event.name for event in self]}>"

    def filter(self, name: str | None = None, **lookups: Any) -> list[OutboxEvent]:
        """Events matching ``name`` and every lookup (``metadata__plan="pro"``, ``user=u``)."""
        return [
            event
            for event in self
            if (name is None or event.name == name)
            and all(_lookup(event, path) == value for path, value in lookups.items())
        ]

    def assert_tracked(self, name: str, count: int | None = None, **lookups: Any) -> OutboxEvent:
        """Fail unless an event ``name`` matching the lookups was tracked (``count`` times)."""
        events = self._current()
        found = [
            event
            for event in events
            if event.name == name
            and all(_lookup(event, path) == value for path, value in lookups.items())
        ]
        if not found or (count is not None and len(found) != count):
            seen = ", ".join(f"{e.name}{e.payload.get('metadata', '')}" for e in events) or "none"
            wanted = f"{count} of " if count is not None else ""
            raise AssertionError(
                f"expected {wanted}{name!r} matching {lookups or 'anything'}; "
                f"found {len(found)}. Tracked: {seen}"
            )
        return found[0]

    def assert_not_tracked(self, name: str, **lookups: Any) -> None:
        found = self.filter(name, **lookups)
        if found:
            raise AssertionError(f"{name!r} was tracked {len(found)} time(s): {found}")


@contextmanager
def capture_events() -> Iterator[TrackedEvents]:
    """Record the events tracked inside the block; with ``DELIVERY_BACKEND`` ``"locmem"``,
    hand them to no queue (``django_supalytics.backends.locmem.outbox`` has the hand-overs).

    Events rolled back are left out (as in production, a rolled-back ``track()`` sends
    nothing), whether or not the test's own transaction ever commits.
    """
    raw = getattr(settings, "SUPALYTICS", {})
    locmem = {**(raw if isinstance(raw, dict) else {}), "DELIVERY_BACKEND": "locmem"}
    with override_settings(SUPALYTICS=locmem), _recording() as events:
        yield events


@contextmanager
def _recording() -> Iterator[TrackedEvents]:
    """The events tracked inside the block, whatever the delivery backend."""
    events = TrackedEvents()

    def on_save(sender: Any, instance: OutboxEvent, created: bool, **kwargs: Any) -> None:
        if created:
            events._record(instance)  # saving set instance._state.db

    post_save.connect(on_save, sender=OutboxEvent, weak=False)
    try:
        yield events
    finally:
        post_save.disconnect(on_save, sender=OutboxEvent)


class SupalyticsTestMixin:
    """For ``TestCase``: ``self.supalytics_events`` and ``self.assertTracked(...)``."""

    supalytics_events: TrackedEvents

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        capture = capture_events()
        self.supalytics_events = capture.__enter__()
        self.addCleanup(capture.__exit__, None, None, None)  # type: ignore[attr-defined]

    def assertTracked(self, name: str, count: int | None = None, **lookups: Any) -> OutboxEvent:
        return self.supalytics_events.assert_tracked(name, count, **lookups)

    def assertNotTracked(self, name: str, **lookups: Any) -> None:
        self.supalytics_events.assert_not_tracked(name, **lookups)
