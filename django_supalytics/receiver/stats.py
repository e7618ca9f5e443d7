"""Counts of what the receiver answered (by status, and replays), for tests and benchmarks."""

from __future__ import annotations

import threading

from django.core.cache import caches

from ..ratelimit import redis_for
from .conf import conf

KEY = "supalytics:receiver:stats"
_lock = threading.Lock()


def count(field: str) -> None:
    cache = caches[conf.CACHE_ALIAS]
    client = redis_for(conf.CACHE_ALIAS)
    if client is not None:
        client.hincrby(cache.make_key(KEY), field, 1)
        return
    with _lock:  # a per-process cache: a lock makes it exact within the process
        counts = cache.get(KEY) or {}
        counts[field] = counts.get(field, 0) + 1
        cache.set(KEY, counts, None)


def read() -> dict[str, int]:
    """``{"200": n, "429": n, "replayed": n, ...}`` since the last reset."""
    cache = caches[conf.CACHE_ALIAS]
    client = redis_for(conf.CACHE_ALIAS)
    if client is not None:
        raw = client.hgetall(cache.make_key(KEY))
        return {k.decode(): int(v) for k, v in raw.items()}
    return dict(cache.get(KEY) or {})


def reset() -> None:
    cache = caches[conf.CACHE_ALIAS]
    client = redis_for(conf.CACHE_ALIAS)
    if client is not None:
        client.delete(cache.make_key(KEY))
    else:
        cache.delete(KEY)
