"""How long the API's answers ask us to wait: ``Retry-After``, ``X-RateLimit-Reset`` read on the
API's own clock, and the backoff between a row's attempts."""

from __future__ import annotations

import math
import random
import threading
from email.utils import parsedate_to_datetime
from typing import Any

from . import state

#: When a 429 names no wait, or a shorter one than this, wait this long.
RATE_LIMIT_WAIT_FLOOR = 1.0
#: The shortest pause until a 429's ``X-RateLimit-Reset``: never a loop of requests that
#: cannot be counted in the next window yet.
RESET_WAIT_FLOOR = 0.02
#: The longest pause a 429's headers (or an answer with no requests left in the window) impose,
#: whatever they ask for: a broken header must not stop delivery for an hour.
RATE_LIMIT_WAIT_MAX = 60.0


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from ``Retry-After``: delta seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def parse_ratelimit_reset(value: str | None, now: float) -> float | None:
    """Seconds to wait from ``X-RateLimit-Reset``.

    An epoch in seconds, or in milliseconds when over 10**12; under 10**9 it is taken as a
    number of seconds to wait.
    """
    if not value:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if number != number or number < 0:
        return None
    if number >= 1e12:
        return max(0.0, number / 1000.0 - now)
    if number >= 1e9:
        return max(0.0, number - now)
    return number


class ServerClock:
    """The API's clock, as its ``X-RateLimit-Reset`` answers tell it.

    Each answer names the end of the one-second window its request was counted in, in whole
    seconds of the server's clock, so the server's time at that moment was within the second
    before. The request was counted between our send and our receipt; so every answer bounds
    the offset (server minus ours), and many answers pin it to about a round trip. A pause "until
    the reset" is then measured on the server's clock, not ours: a clock an hour or 0.3 s off
    neither stalls delivery nor ends a pause before the server's window does. Answers that do
    not fit the bounds so far (the server's clock was set) start them again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._low = -math.inf
        self._high = math.inf

    def observe(self, reset: str | None, sent: float, received: float) -> None:
        """Learn from one answer's ``X-RateLimit-Reset`` (only whole Unix seconds say when)."""
        try:
            end = float((reset or "").strip())
        except ValueError:
            return
        if not (1e9 <= end < 1e12) or end != math.floor(end):
            return
        low, high = end - 1.0 - received, end - sent
        with self._lock:
            if low > self._high or high < self._low:
                self._low, self._high = low, high
            else:
                self._low, self._high = max(self._low, low), min(self._high, high)

    def earliest(self) -> float:
        """Seconds the server's clock is ahead of ours (negative: behind), at the least the
        answers so far allow (0 until known): a pause measured with it on the server's clock
        never ends before the server's window does."""
        with self._lock:
            if math.isinf(self._low) or math.isinf(self._high):
                return 0.0
            return self._low


def server_clock(endpoint: str) -> ServerClock:
    """The clock of the API at ``endpoint``, as learned in this process."""
    clocks = state.current().server_clocks
    clock: ServerClock = clocks.setdefault(endpoint, ServerClock())
    return clock


def rate_limit_wait(headers: Any, now: float, cap: float) -> float:
    """How long a 429 asks every sender to wait, at most ``cap``.

    ``Retry-After`` is whole seconds, so a 429 near the end of a one-second window says "1" for
    what is a few milliseconds. When it asks no more than ``X-RateLimit-Reset`` rounded up to a
    second, the reset (``now`` is on the server's clock) is the precise end of the pause; a
    longer ``Retry-After`` is the server asking for more, and wins. With neither header, or
    only a zero, the floor.
    """
    after = parse_retry_after(headers.get("Retry-After"), now)
    reset = parse_ratelimit_reset(headers.get("X-RateLimit-Reset"), now)
    if reset is not None and (after is None or after <= max(1.0, math.ceil(reset))):
        wait = max(reset, RESET_WAIT_FLOOR)
    else:
        wait = max(after or 0.0, reset or 0.0, RATE_LIMIT_WAIT_FLOOR)
    return min(wait, cap)


def backoff(attempt: int, base: float, cap: float) -> float:
    """Capped exponential backoff with full jitter for the ``attempt``-th retry (1-based)."""
    exp = min(cap, base * 2 ** max(0, attempt - 1))
    return random.uniform(0, exp)
