"""Assert on tracked events in your own tests, without network or Celery.

Like Django's ``mail.outbox``: while capturing, events are recorded (validated and written to
the outbox as usual) but never handed to Celery.

    from django_supalytics.testing import capture_events

    with capture_events() as events:
        client.post("/upgrade/", {"plan": "pro"})
    events.assert_tracked("subscription_upgraded", metadata__plan="pro", visitor_id="abc")

pytest: the ``supalytics_events`` fixture. unittest: ``SupalyticsTestMixin``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from django.db.models.signals import post_save

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


class TrackedEvents(list[OutboxEvent]):
    """The events tracked while capturing, in order."""

    def named(self, name: str) -> list[OutboxEvent]:
        return [event for event in self if event.name == name]

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
        found = self.filter(name, **lookups)
        if not found or (count is not None and len(found) != count):
            seen = ", ".join(f"{e.name}{e.payload.get('metadata', '')}" for e in self) or "none"
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
    """Record the events tracked inside the block; hand none of them to Celery.

    Only events whose transaction committed are kept (as in production, a rolled-back
    ``track()`` leaves nothing): the list is filled on commit.
    """
    events = TrackedEvents()

    def on_save(sender: Any, instance: OutboxEvent, created: bool, **kwargs: Any) -> None:
        if created:
            from django.db import transaction

            transaction.on_commit(lambda: events.append(instance), using=kwargs.get("using"))

    post_save.connect(on_save, sender=OutboxEvent, weak=False)
    try:
        with mock.patch("django_supalytics.dispatch.Publisher.submit"):
            yield events
    finally:
        post_save.disconnect(on_save, sender=OutboxEvent)


class SupalyticsTestMixin:
    """For ``TestCase``: ``self.supalytics_events`` and ``self.assertTracked(...)``.

    In a ``TestCase`` (one transaction per test) wrap the code in
    ``self.captureOnCommitCallbacks(execute=True)`` so commits are seen.
    """

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
