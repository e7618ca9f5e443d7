"""Which caches can hold what every process shares: the rate limiter and the outage circuit
(Redis), and what is only per process."""

from __future__ import annotations

from importlib.util import find_spec

from django.core.checks import CheckMessage, Error, Warning

PER_PROCESS_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)

REDIS_CACHES = (
    "django.core.cache.backends.redis.RedisCache",
    "django_redis.cache.RedisCache",
)


def limiter_cache_errors(alias: str, backend: str) -> list[CheckMessage]:
    """W002: the shared limiter needs Redis; any other cache gets a per-process one. E025: a
    Redis cache whose client library is not installed (nothing could be sent)."""
    if backend in REDIS_CACHES:
        missing = [name for name in ("redis", backend.split(".")[0]) if not find_spec(name)]
        if not missing:
            return []
        return [
            Error(
                f"The cache {alias!r} that holds the rate limiter is {backend}, but "
                f"{missing[0]!r} is not installed: no event could be sent.",
                hint='pip install "django-supalytics[redis]"',
                id="supalytics.E025",
            )
        ]
    if backend == "django.core.cache.backends.dummy.DummyCache":
        problem = "is a DummyCache, which stores nothing: no rate limit would apply at all"
    else:
        problem = (
            f"is {backend or 'unset'}, not Redis: the limiter falls back to a lock in each "
            "process, so each worker process would send at the full rate on its own"
        )
    return [
        Warning(
            f"The cache {alias!r} that holds the rate limiter {problem}.",
            hint="Use a Redis cache (django.core.cache.backends.redis.RedisCache) whenever "
            "more than one process sends.",
            id="supalytics.W002",
        )
    ]
