"""One rate limit shared by every worker that sends with the same API key.

The limiter is a GCRA ("generic cell rate algorithm", a token bucket kept as one timestamp): each
request reserves the next free slot, slots are ``1 / RATE_LIMIT`` seconds apart, and a caller sleeps
until its slot. Sends are therefore spaced evenly, so the API's one-second windows see at most
``RATE_LIMIT + 1`` requests whichever way their boundaries fall.

With a Redis cache the state lives in Redis and is updated by one Lua script, atomically for every
process on every machine, on Redis' clock. Any other cache backend gets the same algorithm under a
per-process lock: correct for one process only (a system check warns about it).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from django.core.cache import BaseCache, caches

from . import state
from .conf import conf

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then
  return {0, tostring(paused - now)}
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local delay = tat - now
if delay > max_wait then
  return {0, tostring(delay)}
end
local ttl = math.ceil((delay + interval) * 1000) + 1000
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', ttl)
return {1, tostring(delay)}
"""

_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local untl = now + tonumber(ARGV[1])
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > paused then
  redis.call('SET', KEYS[1], tostring(untl), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return tostring(math.max(untl, paused) - now)
"""


_PAUSED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return tostring(math.max(0, tonumber(redis.call('GET', KEYS[1]) or '0') - now))
"""


@dataclass(frozen=True)
class Reservation:
    """``granted``: a slot is ours, ``delay`` seconds from now. Else: try again in ``delay``."""

    granted: bool
    delay: float


class RateLimiter(Protocol):
    def reserve(self, max_wait: float) -> Reservation: ...

    def pause(self, seconds: float) -> None: ...

    def paused(self) -> float:
        """Seconds left of a pause any worker set (a 429), or 0."""
        ...


def key_id(api_key: str) -> str:
    """A short digest that names the key in cache keys and logs without revealing it."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def redis_for(alias: str) -> Any | None:
    """The redis-py client behind cache ``alias`` (made once per process, in ``state``), or
    None."""
    clients = state.current().redis_clients
    if alias not in clients:
        clients[alias] = redis_client(caches[alias])
    return clients[alias]


def redis_client(cache: BaseCache) -> Any | None:
    """The redis-py client behind a Django cache, or None when the cache is not Redis."""
    # Django's own RedisCache keeps it behind a private attribute; django-redis exposes it.
    inner = getattr(cache, "_cache", None)
    get_client = getattr(inner, "get_client", None)
    if get_client is not None and type(cache).__module__.startswith("django.core.cache"):
        return get_client(write=True)
    client = getattr(cache, "client", None)
    if client is not None and hasattr(client, "get_client"):
        return client.get_client(write=True)
    return None


class RedisRateLimiter:
    def __init__(self, client: Any, cache: BaseCache, name: str, rate: float) -> None:
        self._client = client
        self._interval = 1.0 / rate
        self._tat_key = cache.make_key(f"supalytics:rl:{name}:tat")
        self._pause_key = cache.make_key(f"supalytics:rl:{name}:pause")

    def reserve(self, max_wait: float) -> Reservation:
        granted, delay = self._client.eval(
            _RESERVE, 2, self._tat_key, self._pause_key, repr(self._interval), repr(max_wait)
        )
        return Reservation(bool(int(granted)), max(0.0, float(delay)))

    def pause(self, seconds: float) -> None:
        self._client.eval(_PAUSE, 1, self._pause_key, repr(max(0.0, seconds)))

    def paused(self) -> float:
        return max(0.0, float(self._client.eval(_PAUSED, 1, self._pause_key)))


class LocalRateLimiter:
    """The same algorithm in any Django cache, atomic within one process only."""

    _lock = threading.Lock()

    def __init__(self, cache: BaseCache, name: str, rate: float) -> None:
        self._cache = cache
        self._interval = 1.0 / rate
        self._tat_key = f"supalytics:rl:{name}:tat"
        self._pause_key = f"supalytics:rl:{name}:pause"

    def reserve(self, max_wait: float) -> Reservation:
        with self._lock:
            now = time.time()
            paused = float(self._cache.get(self._pause_key) or 0.0)
            if paused > now:
                return Reservation(False, paused - now)
            tat = max(float(self._cache.get(self._tat_key) or 0.0), now)
            delay = tat - now
            if delay > max_wait:
                return Reservation(False, delay)
            self._cache.set(self._tat_key, tat + self._interval, math.ceil(delay) + 2)
            return Reservation(True, delay)

    def pause(self, seconds: float) -> None:
        with self._lock:
            until = time.time() + max(0.0, seconds)
            if until > float(self._cache.get(self._pause_key) or 0.0):
                self._cache.set(self._pause_key, until, math.ceil(seconds) + 2)

    def paused(self) -> float:
        with self._lock:
            return max(0.0, float(self._cache.get(self._pause_key) or 0.0) - time.time())


def get_limiter(api_key: str) -> RateLimiter:
    """The limiter for ``api_key`` as configured by ``RATE_LIMIT`` and ``CACHE_ALIAS``."""
    cache = caches[conf.CACHE_ALIAS]
    name = key_id(api_key)
    client = redis_for(conf.CACHE_ALIAS)
    if client is not None:
        return RedisRateLimiter(client, cache, name, conf.RATE_LIMIT)
    return LocalRateLimiter(cache, name, conf.RATE_LIMIT)
