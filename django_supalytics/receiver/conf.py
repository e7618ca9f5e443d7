"""``settings.SUPALYTICS_RECEIVER``, read on each use."""

from __future__ import annotations

import time
from typing import Any

from ..conf import SettingsView

DEFAULTS: dict[str, Any] = {
    "API_KEYS": [],
    "RATE_LIMIT": 100,
    "CACHE_ALIAS": "default",
    "CONTROL": False,
    "CONTROL_TOKEN": None,
    "MAX_EVENTS": 100_000,
    "CLOCK_OFFSET": 0.0,
}


class ReceiverSettings(SettingsView):
    setting = "SUPALYTICS_RECEIVER"
    defaults = DEFAULTS

    RATE_LIMIT: int
    CACHE_ALIAS: str
    CONTROL: bool
    MAX_EVENTS: int
    CLOCK_OFFSET: float

    @property
    def API_KEYS(self) -> list[str]:
        return [str(key) for key in self._get("API_KEYS")]

    @property
    def CONTROL_TOKEN(self) -> str | None:
        token = self._get("CONTROL_TOKEN")
        return str(token) if token else None

    def now(self) -> float:
        """The receiver's clock: Unix time shifted by ``CLOCK_OFFSET`` (a server's clock is
        not its clients'), for its windows, ``X-RateLimit-Reset`` and ``Retry-After``."""
        return time.time() + self.CLOCK_OFFSET


conf = ReceiverSettings()
