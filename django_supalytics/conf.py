"""Settings, read from ``settings.SUPALYTICS`` each time they are used.

Reading lazily keeps ``override_settings`` working and keeps imports free of settings access.
Every key is documented in ``docs/settings.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import UnionType
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

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


class SettingsView:
    """A typed view of one settings dict, ``settings.<setting>``, read on each access.

    Each name of ``defaults`` a subclass annotates becomes a property: the project's value,
    else the default, converted to the annotated type (``float``, ``int``, ``str``, ``bool``,
    a ``tuple`` or ``X | None``). A setting that needs more is a property of its own.
    """

    setting: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]

    @property
    def raw(self) -> Any:
        return getattr(settings, self.setting, {})

    def _get(self, name: str) -> Any:
        raw = self.raw or {}
        return raw.get(name, self.defaults[name]) if isinstance(raw, dict) else self.defaults[name]

    def __init_subclass__(cls) -> None:
        hints = get_type_hints(cls)
        missing = set(cls.defaults) - set(hints) - set(vars(cls))
        if missing:
            raise TypeError(f"{cls.__name__}: no annotation or property for {sorted(missing)}")
        for name, kind in hints.items():
            if name in cls.defaults:
                setattr(cls, name, _setting(name, _converter(kind)))


def _setting(name: str, convert: Callable[[Any], Any]) -> property:
    return property(lambda view: convert(view._get(name)))


def _converter(kind: Any) -> Callable[[Any], Any]:
    """What turns a value into ``kind``, one of the annotations ``SettingsView`` knows."""
    if get_origin(kind) in (Union, UnionType):  # X | None
        other = _converter(next(arg for arg in get_args(kind) if arg is not type(None)))
        return lambda value: None if value is None else other(value)
    if get_origin(kind) is tuple:
        return tuple
    return kind  # type: ignore[no-any-return]


class Settings(SettingsView):
    """``settings.SUPALYTICS``; every key is documented in ``docs/settings.md``."""

    setting = "SUPALYTICS"
    defaults = DEFAULTS

    ENDPOINT: str
    ENABLED: bool
    RATE_LIMIT: float
    CACHE_ALIAS: str
    #: The most one request may take, from connect to the last byte of the answer.
    REQUEST_TIMEOUT: float
    MAX_ATTEMPTS: int
    BACKOFF_BASE: float
    BACKOFF_MAX: float
    OUTAGE_PROBE_MAX: float
    MAX_COUNTDOWN: float
    LEASE_SECONDS: float
    SWEEP_GRACE: float
    BATCH_SIZE: int
    SEND_CONCURRENCY: int
    RETENTION_DAYS: float
    FAILED_RETENTION_DAYS: float | None
    OUTBOX_DATABASES: tuple[str, ...]
    TASK_QUEUE: str | None
    ENQUEUE: str
    DELIVERY_BACKEND: str
    COOKIE_NAME: str
    HEADER_NAME: str
    SOURCE_ORDER: tuple[str, ...]
    USER_FIELD: str | None
    ATTRIBUTION: str
    HEALTH_MAX_LAG: float
    #: What ``track()`` does for a suppressed visitor: ``"anonymize"`` or ``"drop"``; ``"off"``
    #: (the default): no suppression, and ``track()`` looks nothing up.
    SUPPRESSION: str

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
    def MAX_AGE(self) -> dict[str, float]:
        """``{event name: seconds}``: rows older than that when their turn comes expire."""
        return {str(name): float(age) for name, age in dict(self._get("MAX_AGE")).items()}

    @property
    def METRICS_TOKEN(self) -> str | None:
        """The bearer token a scraper sends to ``metrics/`` (None: staff only)."""
        token = self._get("METRICS_TOKEN")
        return token.strip() or None if isinstance(token, str) else None

    @property
    def HONOR_GPC(self) -> bool:
        """Treat a request with ``Sec-GPC: 1`` as from a suppressed visitor."""
        return self._get("HONOR_GPC") is True


conf = Settings()
