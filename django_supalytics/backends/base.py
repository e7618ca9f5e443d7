"""The public base class of delivery backends, after ``django.tasks.backends.base``."""

from __future__ import annotations

from django.core.checks import CheckMessage


class BaseDeliveryBackend:
    """Hands the IDs of committed outbox rows to whatever runs their delivery.

    A backend only says "look at these rows": the row decides what is sent, so a message that
    is lost, late or run twice costs nothing but a claim that finds nothing due. Subclass it,
    implement ``enqueue()``, and name the class in ``SUPALYTICS["DELIVERY_BACKEND"]`` by its
    dotted path. One instance serves the process (``get_backend()``); it may be called from
    any thread.
    """

    #: Who delivers what this backend is handed, as commands say it ("Queued for ...").
    delivered_by = "the delivery backend"

    @property
    def runs_inline(self) -> bool:
        """``enqueue()`` runs the delivery at once, on the calling thread (Celery's eager
        mode, Django's ``ImmediateBackend``). Such a backend cannot defer, and its tasks leave
        other due rows alone: the committing request would wait for them."""
        return False

    @property
    def supports_defer(self) -> bool:
        """``enqueue()`` honours a ``countdown``. Without, a row handed back for later is not
        handed over at all: it waits for its next delivery, the sweeper or
        ``supalytics_drain``."""
        return False

    @property
    def publish_in_background(self) -> bool:
        """The hand-over is a round trip worth keeping off the committing thread (a broker):
        the publisher thread does it, unless ``SUPALYTICS["ENQUEUE"]`` is ``"inline"``."""
        return False

    def enqueue(
        self, event_ids: list[int], countdown: float | None = None, using: str | None = None
    ) -> bool:
        """Hand ``event_ids`` (rows of the database ``using``, None for the outbox's default)
        over, to be delivered in ``countdown`` seconds or now. False if that could not be done:
        the publisher tries again. It should not raise (a raise counts as False)."""
        raise NotImplementedError("subclasses of BaseDeliveryBackend must implement enqueue()")

    def check(self) -> list[CheckMessage]:
        """This backend's system checks (run by ``manage.py check``)."""
        return []
