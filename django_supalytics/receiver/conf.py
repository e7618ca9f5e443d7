"""``settings.SUPALYTICS_RECEIVER``, read on each use."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "API_KEYS": [],
    "RATE_LIMIT": 100,
    "CACHE_ALIAS": "default",
    "CONTROL": False,
    "CONTROL_TOKEN": None,
    "MAX_EVENTS": 100_000,
    "CLOCK_OFFSET": 0.0,
}


class ReceiverSettings:
    def _get(self, name: str) -> Any:
        raw = getattr(settings, "SUPALYTICS_RECEIVER", {}) or {}
        return raw.get(name, DEFAULTS[name]) if isinstance(raw, dict) else DEFAULTS[name]

    @property
    def API_KEYS(self) -> list[str]:
        return [str(key) for key in self._get("API_KEYS")]

    @property
    def RATE_LIMIT(self) -> int:
        return int(self._get("RATE_LIMIT"))

    @property
    def CACHE_ALIAS(self) -> str:
        return str(self._get("CACHE_ALIAS"))

    @property
    def CONTROL(self) -> bool:
        return bool(self._get("CONTROL"))

    @property
    def CONTROL_TOKEN(self) -> str | None:
        token = self._get("CONTROL_TOKEN")
        return str(token) if token else None

    @property
    def MAX_EVENTS(self) -> int:
        return int(self._get("MAX_EVENTS"))

    @property
    def CLOCK_OFFSET(self) -> float:
        return float(self._get("CLOCK_OFFSET"))

    def now(self) -> float:
        """The receiver's clock: Unix time shifted by ``CLOCK_OFFSET`` (a server's clock is
        not its clients'), for its windows, ``X-RateLimit-Reset`` and ``Retry-After``."""
        return time.time() + self.CLOCK_OFFSET


conf = ReceiverSettings()
