"""Settings, read from ``settings.SUPALYTICS`` each time they are used.

Reading lazily keeps ``override_settings`` working and keeps imports free of settings access.
Every key is documented in ``docs/settings.md``.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings

DEFAULT_ENDPOINT = "https://api.supalytics.co/v1/events"
#: The connect part of ``REQUEST_TIMEOUT`` at most: a little over 3 s, TCP's first SYN
#: retransmission, so one lost SYN is retried.
CONNECT_TIMEOUT_MAX = 3.05

DEFAULTS: dict[str, Any] = {
    "API_KEY": None,
    "ENDPOINT": DEFAULT_ENDPOINT,
    "ENABLED": True,
    "RATE_LIMIT": 98,
    "CACHE_ALIAS": "default",
    "REQUEST_TIMEOUT": 10.0,
    "MAX_ATTEMPTS": 16,
    "BACKOFF_BASE": 2.0,
    "BACKOFF_MAX": 900.0,
    "OUTAGE_PROBE_MAX": 2.0,
    "MAX_COUNTDOWN": 30.0,
    "LEASE_SECONDS": 60.0,
    "SWEEP_GRACE": 60.0,
    "BATCH_SIZE": 50,
    "SEND_CONCURRENCY": 4,
    "RETENTION_DAYS": 7,
    "FAILED_RETENTION_DAYS": 30,
    "OUTBOX_DATABASES": (),
    "TASK_QUEUE": None,
    "ENQUEUE": "background",
    "DELIVERY_BACKEND": "celery",
    "COOKIE_NAME": "supalytics_vid",
    "HEADER_NAME": "X-Supalytics-Visitor-Id",
    "SOURCE_ORDER": ("header", "cookie"),
    "USER_FIELD": None,
    "ATTRIBUTION": "first",
    "MAX_AGE": {},
    "HEALTH_MAX_LAG": 300.0,
    "METRICS_TOKEN": None,
    "SUPPRESSION": "off",
    "HONOR_GPC": False,
}


class Settings:
    """Typed view of ``settings.SUPALYTICS``; each attribute is read on access."""

    def _get(self, name: str) -> Any:
        value = getattr(settings, "SUPALYTICS", {}) or {}
        if not isinstance(value, dict):
            return DEFAULTS[name]
        return value.get(name, DEFAULTS[name])

    @property
    def raw(self) -> Any:
        return getattr(settings, "SUPALYTICS", {})

    @property
    def API_KEY(self) -> str | None:
        """The key, without surrounding whitespace (a secret file's trailing newline)."""
        key = self._get("API_KEY")
        if key is None:
            key = os.environ.get("SUPALYTICS_API_KEY")
        if isinstance(key, str):
            key = key.strip()
        return key or None

    @property
    def ENDPOINT(self) -> str:
        return str(self._get("ENDPOINT"))

    @property
    def ENABLED(self) -> bool:
        return bool(self._get("ENABLED"))

    @property
    def RATE_LIMIT(self) -> float:
        return float(self._get("RATE_LIMIT"))

    @property
    def CACHE_ALIAS(self) -> str:
        return str(self._get("CACHE_ALIAS"))

    @property
    def REQUEST_TIMEOUT(self) -> float:
        """The most one request may take, from connect to the last byte of the answer."""
        return float(self._get("REQUEST_TIMEOUT"))

    @property
    def MAX_ATTEMPTS(self) -> int:
        return int(self._get("MAX_ATTEMPTS"))

    @property
    def BACKOFF_BASE(self) -> float:
        return float(self._get("BACKOFF_BASE"))

    @property
    def BACKOFF_MAX(self) -> float:
        return float(self._get("BACKOFF_MAX"))

    @property
    def OUTAGE_PROBE_MAX(self) -> float:
        return float(self._get("OUTAGE_PROBE_MAX"))

    @property
    def MAX_COUNTDOWN(self) -> float:
        return float(self._get("MAX_COUNTDOWN"))

    @property
    def LEASE_SECONDS(self) -> float:
        return float(self._get("LEASE_SECONDS"))

    @property
    def SWEEP_GRACE(self) -> float:
        return float(self._get("SWEEP_GRACE"))

    @property
    def BATCH_SIZE(self) -> int:
        return int(self._get("BATCH_SIZE"))

    @property
    def SEND_CONCURRENCY(self) -> int:
        return int(self._get("SEND_CONCURRENCY"))

    @property
    def RETENTION_DAYS(self) -> float:
        return float(self._get("RETENTION_DAYS"))

    @property
    def FAILED_RETENTION_DAYS(self) -> float | None:
        days = self._get("FAILED_RETENTION_DAYS")
        return None if days is None else float(days)

    @property
    def OUTBOX_DATABASES(self) -> tuple[str, ...]:
        return tuple(self._get("OUTBOX_DATABASES"))

    @property
    def TASK_QUEUE(self) -> str | None:
        queue = self._get("TASK_QUEUE")
        return None if queue is None else str(queue)

    @property
    def ENQUEUE(self) -> str:
        return str(self._get("ENQUEUE"))

    @property
    def DELIVERY_BACKEND(self) -> str:
        return str(self._get("DELIVERY_BACKEND"))

    @property
    def COOKIE_NAME(self) -> str:
        return str(self._get("COOKIE_NAME"))

    @property
    def HEADER_NAME(self) -> str:
        return str(self._get("HEADER_NAME"))

    @property
    def SOURCE_ORDER(self) -> tuple[str, ...]:
        return tuple(self._get("SOURCE_ORDER"))

    @property
    def USER_FIELD(self) -> str | None:
        field = self._get("USER_FIELD")
        return None if field is None else str(field)

    @property
    def ATTRIBUTION(self) -> str:
        return str(self._get("ATTRIBUTION"))

    @property
    def MAX_AGE(self) -> dict[str, float]:
        """``{event name: seconds}``: rows older than that when their turn comes expire."""
        return {str(name): float(age) for name, age in dict(self._get("MAX_AGE")).items()}

    @property
    def HEALTH_MAX_LAG(self) -> float:
        return float(self._get("HEALTH_MAX_LAG"))

    @property
    def METRICS_TOKEN(self) -> str | None:
        """The bearer token a scraper sends to ``metrics/`` (None: staff only)."""
        token = self._get("METRICS_TOKEN")
        return token.strip() or None if isinstance(token, str) else None

    @property
    def SUPPRESSION(self) -> str:
        """What ``track()`` does for a suppressed visitor: ``"anonymize"`` or ``"drop"``;
        ``"off"`` (the default): no suppression, and ``track()`` looks nothing up."""
        return str(self._get("SUPPRESSION"))

    @property
    def HONOR_GPC(self) -> bool:
        """Treat a request with ``Sec-GPC: 1`` as from a suppressed visitor."""
        return self._get("HONOR_GPC") is True


conf = Settings()
