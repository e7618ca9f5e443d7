"""Signals sent after an outcome is recorded. A receiver that raises is logged, never raised."""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

logger = logging.getLogger("django_supalytics")

#: Sent once an event is accepted by the API. Arguments: ``event`` (the ``OutboxEvent``).
event_delivered = Signal()

#: Sent once an event has failed for good. Arguments: ``event``, ``error`` (text).
event_failed = Signal()


def send_safely(signal: Signal, sender: type, **kwargs: Any) -> None:
    for receiver, result in signal.send_robust(sender=sender, **kwargs):
        if isinstance(result, Exception):
            logger.error("supalytics signal receiver %r raised", receiver, exc_info=result)
