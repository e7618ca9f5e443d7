"""Fault injection: make the receiver misbehave on purpose, to test a client's retries.

State lives in the receiver's cache, so every receiver process sharing that cache (Redis) sees
the same faults. Usable from Python, and over HTTP when ``SUPALYTICS_RECEIVER["CONTROL"]`` is on.

    from django_supalytics.receiver import faults
    faults.inject(status=500, count=3)          # the next 3 requests answer 500
    faults.inject(drop=True, fraction=0.2)      # a fifth of requests lose their connection
    faults.inject(delay=2.0, api_key="sly_a")   # requests with that key wait 2 s first
    faults.inject(500, seconds=5)               # every request for the next 5 seconds
    faults.reset()
"""

from __future__ import annotations

import math
import random
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from django.core.cache import BaseCache, caches

from ..ratelimit import key_id
from .conf import conf

STATE_KEY = "supalytics:receiver:state"
#: Rules kept at once; ``reset()`` to add more.
MAX_FAULTS = 100
#: A rule's use counter lives this long in the cache (rules are for tests, not for days).
COUNTER_TIMEOUT = 24 * 3600


@dataclass(frozen=True)
class Fault:
    """One rule. ``count`` None means until reset; ``key_id`` None means every key."""

    id: str
    status: int | None = None
    delay: float = 0.0
    drop: bool = False
    count: int | None = None
    fraction: float = 1.0
    key_id: str | None = None
    until: float | None = None  # Unix time after which the rule no longer applies


def _cache() -> BaseCache:
    return caches[conf.CACHE_ALIAS]


def state() -> dict[str, Any]:
    """``{"generation": n, "faults": [...]}``; the generation names the rate-limit windows."""
    value = _cache().get(STATE_KEY)
    return value if isinstance(value, dict) else {"generation": 0, "faults": []}


def inject(
    status: int | None = None,
    *,
    count: int | None = None,
    fraction: float = 1.0,
    delay: float = 0.0,
    drop: bool = False,
    api_key: str | None = None,
    seconds: float | None = None,
) -> Fault:
    """Add a fault rule; rules are tried in the order they were added."""
    _check_types(status, count, fraction, delay, drop, api_key, seconds)
    if status is None and not drop and delay <= 0:
        raise ValueError("a fault needs a status, a delay or drop=True")
    if status is not None and not 100 <= status <= 599:
        raise ValueError(f"status must be an HTTP status code, not {status!r}")
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    if count is not None and count < 1:
        raise ValueError("count must be at least 1")
    if not 0 <= delay <= 60:
        raise ValueError("delay must be between 0 and 60 seconds")
    if seconds is not None and seconds <= 0:
        raise ValueError("seconds must be positive")
    fault = Fault(
        id=uuid.uuid4().hex,
        status=status,
        delay=float(delay),
        drop=drop,
        count=count,
        fraction=float(fraction),
        key_id=key_id(api_key) if api_key else None,
        until=time.time() + seconds if seconds is not None else None,
    )
    current = state()
    if len(current["faults"]) >= MAX_FAULTS:
        raise ValueError(f"at most {MAX_FAULTS} fault rules at once; reset first")
    current["faults"] = [*current["faults"], asdict(fault)]
    _cache().set(STATE_KEY, current, None)
    return fault


def _check_types(
    status: object,
    count: object,
    fraction: object,
    delay: object,
    drop: object,
    api_key: object,
    seconds: object,
) -> None:
    """Refuse values of the wrong type (they arrive as JSON over HTTP) with a ValueError."""

    def whole(name: str, value: object) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be a whole number")

    def number(name: str, value: object) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number")

    whole("status", status)
    whole("count", count)
    number("fraction", fraction)
    number("delay", delay)
    number("seconds", seconds)
    if not isinstance(drop, bool):
        raise ValueError("drop must be true or false")
    if api_key is not None and not isinstance(api_key, str):
        raise ValueError("api_key must be a string")


def reset(received: bool = True) -> None:
    """Remove every fault, start new rate-limit windows, zero the answer counts, and forget
    the received events (``received=False`` keeps them), as ``POST /v1/_control/reset`` does."""
    from . import stats

    current = state()
    _cache().set(STATE_KEY, {"generation": current["generation"] + 1, "faults": []}, None)
    stats.reset()
    if received:
        from .models import ReceivedEvent

        ReceivedEvent.objects.all().delete()


def match(faults: list[dict[str, Any]], request_key_id: str | None) -> Fault | None:
    """The first rule that applies to this request, using up one of its ``count``."""
    cache = _cache()
    for raw in faults:
        fault = Fault(**raw)
        if fault.key_id is not None and fault.key_id != request_key_id:
            continue
        if fault.until is not None and time.time() > fault.until:
            continue
        if fault.fraction < 1 and random.random() >= fault.fraction:
            continue
        if fault.count is not None:
            counter = f"supalytics:receiver:fault:{fault.id}"
            cache.add(counter, 0, COUNTER_TIMEOUT)
            if cache.incr(counter) > fault.count:
                continue
        return fault
    return None
