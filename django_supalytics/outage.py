"""Outage detection shared by every worker that sends with one API key: a circuit breaker.

``THRESHOLD`` transient failures (5xx, 408, timeouts, refused connections) in a row, counted
across every worker, open the circuit: nobody sends, and rows are handed back without spending
an attempt. After ``PROBE_BASE`` seconds one request (the *probe*) is let through; if it fails
the circuit opens again for twice as long (up to ``OUTAGE_PROBE_MAX``), if it succeeds the
circuit closes and sending resumes at the rate limit. Any answer that is not a transient
failure (2xx, 429, a 4xx) means the API is up and closes the circuit; an isolated failure only
counts. A failure that opened the circuit, one met while it was open, and a failed probe are
the API's fault, not the row's: ``report`` says so, and the row spends no attempt.

With a Redis cache the state is one hash in Redis, read and changed by Lua scripts on Redis'
clock, so every process on every machine sees one circuit. Any other cache gets the same
algorithm in a per-process dict (each process detects the outage on its own).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from django.core.cache import caches

from . import state
from .client import request_deadline
from .conf import conf
from .ratelimit import key_id, redis_for

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until == 0 then return {1, 0, '0'} end
if open_until > now then return {0, 0, tostring(open_until - now)} end
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
if probe_until > now then return {0, 0, tostring(math.min(probe_until - now, 1))} end
redis.call('HSET', KEYS[1], 'probe_until', tostring(now + tonumber(ARGV[1])))
return {1, 1, '0'}
"""

_REPORT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ok, probe = tonumber(ARGV[1]), tonumber(ARGV[2])
local threshold, base, max = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if ok == 1 then
  redis.call('DEL', KEYS[1])
  return '0'
end
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if probe == 0 and open_until > 0 then return tostring(math.max(open_until - now, 0.001)) end
local interval = 0
if probe == 1 then
  interval = math.min(tonumber(redis.call('HGET', KEYS[1], 'interval') or base) * 2, max)
elseif open_until == 0 then
  if redis.call('HINCRBY', KEYS[1], 'fails', 1) >= threshold then interval = base end
end
if interval > 0 then
  redis.call('HSET', KEYS[1], 'open_until', tostring(now + interval),
             'interval', tostring(interval), 'probe_until', '0', 'fails', '0')
end
redis.call('EXPIRE', KEYS[1], math.ceil(max * 4 + 60))
return tostring(interval)
"""

_OPEN_FOR = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until == 0 then return '-1' end
return tostring(math.max(open_until - now, 0))
"""


@dataclass(frozen=True)
class Admission:
    """``allowed``: send now (``probe``: as the one request that tests a failing API). Else
    ``delay``: seconds until the circuit lets a request through again."""

    allowed: bool
    probe: bool = False
    delay: float = 0.0


CLOSED = Admission(True)


class Circuit(Protocol):
    def admit(self) -> Admission: ...

    def report(self, ok: bool, probe: bool) -> float:
        """Record an answer (``ok``: not a transient failure). Returns the seconds until the
        circuit lets a request through again when this failure is part of an outage (it
        opened the circuit, the circuit was open already, or it was a failed probe), else 0."""
        ...


#: Transient failures in a row, across every worker, that make an outage.
THRESHOLD = 3
#: The first wait before a probe; it doubles with every failed probe, up to OUTAGE_PROBE_MAX.
PROBE_BASE = 1.0


def _settings() -> tuple[int, float, float, float]:
    probe_timeout = request_deadline() + 1.0
    maximum = conf.OUTAGE_PROBE_MAX
    return THRESHOLD, min(PROBE_BASE, maximum), maximum, probe_timeout


class RedisCircuit:
    def __init__(self, client: Any, key: str) -> None:
        self._client = client
        self._key = key

    def admit(self) -> Admission:
        allowed, probe, delay = self._client.eval(_ADMIT, 1, self._key, repr(_settings()[3]))
        return Admission(bool(int(allowed)), bool(int(probe)), max(0.0, float(delay)))

    def report(self, ok: bool, probe: bool) -> float:
        threshold, base, maximum, _ = _settings()
        opened = self._client.eval(
            _REPORT,
            1,
            self._key,
            int(ok),
            int(probe),
            threshold,
            repr(base),
            repr(maximum),
        )
        return float(opened)


class LocalCircuit:
    """The same state machine in this process only (its state in ``state.current()``)."""

    _lock = threading.Lock()

    def __init__(self, key: str) -> None:
        self._key = key

    def admit(self) -> Admission:
        with self._lock:
            st = _local_states().get(self._key)
            now = time.monotonic()
            if not st or not st.get("open_until"):
                return CLOSED
            if st["open_until"] > now:
                return Admission(False, delay=st["open_until"] - now)
            if st.get("probe_until", 0.0) > now:
                # The probe's answer is due soon: look again in a second at most.
                return Admission(False, delay=min(st["probe_until"] - now, 1.0))
            st["probe_until"] = now + _settings()[3]
            return Admission(True, probe=True)

    def report(self, ok: bool, probe: bool) -> float:
        threshold, base, maximum, _ = _settings()
        with self._lock:
            if ok:
                _local_states().pop(self._key, None)
                return 0.0
            st = _local_states().setdefault(self._key, {})
            now = time.monotonic()
            if not probe and st.get("open_until"):
                return max(st["open_until"] - now, 0.001)
            interval = 0.0
            if probe:
                interval = min(st.get("interval", base) * 2, maximum)
            elif not st.get("open_until"):
                st["fails"] = st.get("fails", 0.0) + 1
                if st["fails"] >= threshold:
                    interval = base
            if interval:
                st.update(open_until=now + interval, interval=interval, probe_until=0.0)
                st["fails"] = 0.0
            return interval


def _local_states() -> dict[str, dict[str, float]]:
    return state.current().circuits


def get_circuit(api_key: str) -> Circuit:
    """The circuit of ``api_key``, in the limiter's cache (``CACHE_ALIAS``)."""
    name = f"supalytics:outage:{key_id(api_key)}"
    client = redis_for(conf.CACHE_ALIAS)
    if client is not None:
        return RedisCircuit(client, caches[conf.CACHE_ALIAS].make_key(name))
    return LocalCircuit(name)


def open_for(api_key: str) -> float | None:
    """Read-only: None while the circuit of ``api_key`` is closed; while it is open, the
    seconds until it lets its next probe through (0: a probe may go, or is in flight)."""
    name = f"supalytics:outage:{key_id(api_key)}"
    client = redis_for(conf.CACHE_ALIAS)
    if client is not None:
        left = float(client.eval(_OPEN_FOR, 1, caches[conf.CACHE_ALIAS].make_key(name)))
        return None if left < 0 else left
    with LocalCircuit._lock:
        open_until = _local_states().get(name, {}).get("open_until", 0.0)
    return max(open_until - time.monotonic(), 0.0) if open_until else None
