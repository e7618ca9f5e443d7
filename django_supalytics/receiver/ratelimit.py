"""The receiver's limit: fixed one-second windows per key, counted in the shared cache."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.cache import caches

from ..ratelimit import redis_for
from .conf import conf


@dataclass(frozen=True)
class Window:
    limit: int
    count: int
    reset: int  # Unix time, whole seconds, at which this window ends

    @property
    def allowed(self) -> bool:
        return self.count <= self.limit

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


def hit(key_id: str, generation: int, now: float | None = None) -> Window:
    """Count one request for ``key_id`` in the current window."""
    now = conf.now() if now is None else now
    second = int(now)
    cache = caches[conf.CACHE_ALIAS]
    name = cache.make_key(f"supalytics:receiver:rl:{generation}:{key_id}:{second}")
    client = redis_for(conf.CACHE_ALIAS)
    if client is not None:
        # One round trip, atomic for every receiver process sharing this Redis.
        count, _ = client.pipeline().incr(name).expire(name, 5).execute()
        return Window(conf.RATE_LIMIT, int(count), second + 1)
    cache.add(name, 0, 5)
    try:
        count = cache.incr(name)
    except ValueError:  # expired between add and incr: this request opens the window again
        cache.add(name, 0, 5)
        count = cache.incr(name)
    return Window(conf.RATE_LIMIT, count, second + 1)
