"""pytest fixtures for projects that use django-supalytics (registered as a ``pytest11`` plugin).

``supalytics_receiver``: the mock receiver on a live server (pytest-django's ``live_server``),
with the client's ``ENDPOINT`` pointed at it, its received events and fault injection.
Needs ``django_supalytics.receiver`` in INSTALLED_APPS and its urls mounted at the root.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from .receiver.faults import Fault
    from .receiver.models import ReceivedEvent


class LiveReceiver:
    """A running mock receiver: ``url``, ``events()``, ``inject(...)``, ``reset()``."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/v1/events"
        self.api_key = api_key

    def events(self) -> QuerySet[ReceivedEvent]:
        from .receiver.models import ReceivedEvent

        return ReceivedEvent.objects.order_by("id")

    def inject(self, status: int | None = None, **kwargs: Any) -> Fault:
        from .receiver import faults

        return faults.inject(status, **kwargs)

    def reset(self, received: bool = True) -> None:
        from .receiver import faults

        faults.reset(received=received)


@pytest.fixture
def supalytics_receiver(request: pytest.FixtureRequest, settings: Any) -> Iterator[LiveReceiver]:
    live_server = request.getfixturevalue("live_server")
    request.getfixturevalue("transactional_db")
    keys = list(getattr(settings, "SUPALYTICS_RECEIVER", {}).get("API_KEYS", []))
    api_key = keys[0] if keys else "sly_test_pytest"
    settings.SUPALYTICS_RECEIVER = {
        **getattr(settings, "SUPALYTICS_RECEIVER", {}),
        "API_KEYS": keys or [api_key],
    }
    receiver = LiveReceiver(live_server.url, api_key)
    settings.SUPALYTICS = {
        **getattr(settings, "SUPALYTICS", {}),
        "API_KEY": api_key,
        "ENDPOINT": receiver.url,
    }
    receiver.reset(received=False)
    yield receiver
    receiver.reset(received=False)
