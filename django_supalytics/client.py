"""The HTTP side of delivery: one POST, and what its answer means (``api-contract.md``)."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from . import __version__
from .conf import conf

USER_AGENT = f"django-supalytics/{__version__}"
ERROR_TEXT_MAX = 500
#: When a 429 names no wait, or a shorter one than this, wait this long.
RATE_LIMIT_WAIT_FLOOR = 1.0


class Kind(str, Enum):
    """What became of a row's turn to be sent: the one vocabulary of the API's classified
    answers (the first four), of ``delivery.Result.outcome``, of the tasks' counts and of the
    commands' output. A row's lasting state is ``OutboxEvent.Status``: ``sent`` and ``failed``
    end there, ``retry``, ``rate_limited`` and ``deferred`` leave it ``pending``.

    Its members are strings: equal to, hashed and formatted as their values on every
    supported Python (as 3.11's ``StrEnum``).
    """

    SENT = "sent"
    RETRY = "retry"  # a transient failure: the row backs off
    RATE_LIMITED = "rate_limited"  # a 429: every worker pauses, no attempt spent
    FAILED = "failed"  # a permanent refusal, or the last attempt
    DEFERRED = "deferred"  # no request made: a pause, the outage circuit, delivery off
    SKIPPED = "skipped"  # not this worker's to send: sent already, or another holds it

    def __hash__(self) -> int:
        return str.__hash__(self)

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)


@dataclass(frozen=True)
class Outcome:
    """An answer of the API (or its absence: a timeout, a refused connection), classified."""

    kind: Kind
    status_code: int | None = None
    error: str = ""
    #: For RATE_LIMITED: seconds to wait. For SENT: seconds until the window resets when the
    #: answer said none remain in it (so every worker pauses), else None.
    wait: float | None = None


def classify(status_code: int) -> Kind:
    """The retry class of an HTTP status (``api-contract.md``, "Retry classes")."""
    if 200 <= status_code < 300:
        return Kind.SENT
    if status_code == 429:
        return Kind.RATE_LIMITED
    if status_code == 408 or (status_code >= 500 and status_code not in (501, 505)):
        return Kind.RETRY
    return Kind.FAILED


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

    def offset(self) -> float:
        """Seconds the server's clock is ahead of ours (negative: behind); 0 until known."""
        with self._lock:
            if math.isinf(self._low) or math.isinf(self._high):
                return 0.0
            return (self._low + self._high) / 2


_server_clocks: dict[str, ServerClock] = {}


def server_clock(endpoint: str) -> ServerClock:
    """The clock of the API at ``endpoint``, as learned in this process."""
    return _server_clocks.setdefault(endpoint, ServerClock())


def rate_limit_wait(headers: Any, now: float, cap: float) -> float:
    """How long a 429 asks every sender to wait: at least the floor, at most ``cap``."""
    waits = [
        w
        for w in (
            parse_retry_after(headers.get("Retry-After"), now),
            parse_ratelimit_reset(headers.get("X-RateLimit-Reset"), now),
        )
        if w is not None
    ]
    wait = max(waits) if waits else RATE_LIMIT_WAIT_FLOOR
    return min(max(wait, RATE_LIMIT_WAIT_FLOOR), cap)


def backoff(attempt: int, base: float, cap: float) -> float:
    """Capped exponential backoff with full jitter for the ``attempt``-th retry (1-based)."""
    exp = min(cap, base * 2 ** max(0, attempt - 1))
    return random.uniform(0, exp)


def error_text(response: requests.Response) -> str:
    """The error an answer carries, read tolerantly, at most 500 characters."""
    text = response.text or ""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    message: Any = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            code, msg = error.get("code"), error.get("message")
            message = f"{code}: {msg}" if code and msg else (msg or code)
        elif isinstance(error, str):
            message = error
        if not message:
            message = data.get("message")
    if not message:
        message = text or response.reason or ""
    return str(message)[:ERROR_TEXT_MAX]


def api_key_problem(api_key: object) -> str | None:
    """Why ``api_key`` cannot go into an ``Authorization`` header, or None. Never quotes it.

    Checked where the key is used (system checks do not run in Celery workers): a newline or
    a non-latin-1 character would make ``requests`` raise with the whole header in its message.
    """
    if not isinstance(api_key, str):
        return f"SUPALYTICS API_KEY must be a string, not {type(api_key).__name__}"
    if not api_key:
        return "SUPALYTICS API_KEY is empty"
    if "\n" in api_key or "\r" in api_key:
        return "SUPALYTICS API_KEY contains a newline"
    if not all("!" <= ch <= "~" for ch in api_key):
        return (
            "SUPALYTICS API_KEY contains invalid characters "
            "(only printable ASCII without spaces is allowed)"
        )
    return None


def _scrub(text: str, api_key: str) -> str:
    # Belt and braces: whatever a library put in its message, the key is not kept.
    return text.replace(api_key, "[API key]") if len(api_key) >= 4 else text


_local = threading.local()


def get_session() -> requests.Session:
    """A keep-alive session per thread (``requests.Session`` is not thread-safe)."""
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=8, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.session = session
    return session


def post_event(payload: dict[str, Any], idempotency_key: str, api_key: str) -> Outcome:
    """POST one event; never raises, and never puts the key in the outcome's error text."""
    problem = api_key_problem(api_key)
    if problem:
        return Outcome(Kind.RETRY, None, f"not sent: {problem}")
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key,
        "User-Agent": USER_AGENT,
    }
    endpoint = conf.ENDPOINT
    sent = time.time()
    try:
        response = get_session().post(
            endpoint,
            data=json.dumps(payload, separators=(",", ":")).encode(),
            headers=headers,
            timeout=(conf.CONNECT_TIMEOUT, conf.READ_TIMEOUT),
        )
    except requests.Timeout as exc:
        return Outcome(Kind.RETRY, None, f"timeout: {type(exc).__name__}")
    except requests.RequestException as exc:
        text = _scrub(f"{type(exc).__name__}: {exc}", api_key)
        return Outcome(Kind.RETRY, None, text[:ERROR_TEXT_MAX])
    except Exception as exc:  # an encoding error, a bug in an adapter: never out of a worker
        text = _scrub(f"{type(exc).__name__}: {exc}", api_key)
        return Outcome(Kind.RETRY, None, text[:ERROR_TEXT_MAX])
    received = time.time()
    clock = server_clock(endpoint)
    clock.observe(response.headers.get("X-RateLimit-Reset"), sent, received)
    now = received + clock.offset()  # the server's time: its headers' times are on its clock
    kind = classify(response.status_code)
    if kind is Kind.SENT:
        wait = None
        if response.headers.get("X-RateLimit-Remaining", "").strip() == "0":
            reset = parse_ratelimit_reset(response.headers.get("X-RateLimit-Reset"), now)
            # On the server's clock, and capped like a 429's wait whatever the header said.
            wait = None if reset is None else min(reset, conf.RATE_LIMIT_WAIT_MAX)
        return Outcome(kind, response.status_code, "", wait)
    if kind is Kind.RATE_LIMITED:
        wait = rate_limit_wait(response.headers, now, conf.RATE_LIMIT_WAIT_MAX)
        return Outcome(kind, response.status_code, error_text(response), wait)
    return Outcome(kind, response.status_code, error_text(response))
