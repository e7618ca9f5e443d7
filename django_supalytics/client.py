"""The HTTP side of delivery: one POST, and what its answer means (``api-contract.md``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from enum import Enum
from http import HTTPStatus
from typing import Any

import requests
import urllib3
from django.views.decorators.debug import sensitive_variables

from . import __version__
from .conf import CONNECT_TIMEOUT_MAX, conf
from .scrubbing import scrub
from .transport import deadline_watch, get_session
from .validation import MetadataEncoder
from .waits import RATE_LIMIT_WAIT_MAX, parse_ratelimit_reset, rate_limit_wait, server_clock

USER_AGENT = f"django-supalytics/{__version__}"
#: How long a 3xx (a misconfigured ENDPOINT) holds the row and pauses every sender.
MISCONFIGURED_WAIT = 60.0
#: The most of an answer's body that is read; a longer one is cut and its connection dropped.
MAX_ANSWER_BYTES = 64 * 1024
#: The most of a redirect's ``Location`` quoted in an error, so the advice after it survives.
LOCATION_TEXT_MAX = 200
#: The most of a 401/403/404 body's JSON ``error`` quoted after the advice (never the page).
EXCERPT_MAX = 100
#: What a 401, 403 or 404 means, and the setting to check: stored instead of the body.
SETTING_ERRORS = {
    401: "the API refused the key: SUPALYTICS['API_KEY'] is wrong; check it",
    403: "the API refused the key: SUPALYTICS['API_KEY'] is wrong (or may not send events); "
    "check it",
    404: "no events API at this address: SUPALYTICS['ENDPOINT'] is wrong; check it "
    "(the API's is https://api.supalytics.co/v1/events)",
}


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
    # No request made (a pause, the outage circuit, delivery off), or a 3xx: a misconfiguration
    DEFERRED = "deferred"
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
    #: answer said none remain in it (so every worker pauses), else None. For DEFERRED (a
    #: redirect): seconds the row waits, without spending an attempt, and every sender pauses.
    wait: float | None = None
    #: How long the request took, from connect to the last byte (None: none was made).
    seconds: float | None = None


def classify(status_code: int) -> Kind:
    """The retry class of an HTTP status (``api-contract.md``, "Retry classes")."""
    if 200 <= status_code < 300:
        return Kind.SENT
    if 300 <= status_code < 400:
        return Kind.DEFERRED  # never followed: the ENDPOINT setting is wrong
    if status_code == 429:
        return Kind.RATE_LIMITED
    if status_code == 408 or (status_code >= 500 and status_code not in (501, 505)):
        return Kind.RETRY
    return Kind.FAILED


def _json_error(text: str) -> tuple[Any, Any]:
    """The JSON body's ``error`` (a string, or an object's "code: message") and ``message``."""
    try:
        data = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    error, message = data.get("error"), None
    if isinstance(error, dict):
        code, msg = error.get("code"), error.get("message")
        message = f"{code}: {msg}" if code and msg else (msg or code)
    elif isinstance(error, str):
        message = error
    return message, data.get("message")


def error_text(text: str, reason: str = "") -> str:
    """The error an answer's body carries, read tolerantly. Neither scrubbed nor cut yet:
    ``scrub`` does both, after it, so no cut can leave part of the key in place."""
    error, message = _json_error(text)
    return str(error or message or text or reason)


@sensitive_variables("api_key")
def setting_error(status_code: int, text: str, api_key: str) -> str:
    """A 401, 403 or 404, as a short error naming the setting to check: never the body, at
    most ``EXCERPT_MAX`` characters of its JSON ``error`` field, scrubbed before it is cut."""
    error, _ = _json_error(text)
    excerpt = scrub(str(error), api_key)[:EXCERPT_MAX].strip() if error else ""
    said = f" (the API said: {excerpt})" if excerpt else ""
    phrase = HTTPStatus(status_code).phrase
    return f"{status_code} {phrase}: {SETTING_ERRORS[status_code]}{said}"


@sensitive_variables("api_key")
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


def request_deadline() -> float:
    """Seconds one request may take at most, from connect to the answer's last byte
    (``REQUEST_TIMEOUT``; the watchdog's cut lands a fraction of a second after it)."""
    return conf.REQUEST_TIMEOUT


_TIMEOUTS = (requests.Timeout, urllib3.exceptions.TimeoutError)


def _decode(body: bytes, charset: str | None) -> str:
    """The answer's text in its declared charset, else UTF-8 (a charset Python does not know,
    ``utf8mb4`` say, is the server's mistake, not a reason to keep the row waiting)."""
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _accepted(response: requests.Response | None) -> bool:
    return response is not None and classify(response.status_code) is Kind.SENT


def _read_body(response: requests.Response) -> bytes:
    """At most ``MAX_ANSWER_BYTES`` of the body. A longer body is cut; closing the response
    then drops its connection (a fully read one is back in the pool already)."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_ANSWER_BYTES:
        chunk = response.raw.read(MAX_ANSWER_BYTES + 1 - size, decode_content=False)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:MAX_ANSWER_BYTES]


@sensitive_variables("api_key")
def _redirect_error(response: requests.Response, api_key: str) -> str:
    location = response.headers.get("Location")
    where = (
        f"redirect to {scrub(location, api_key)[:LOCATION_TEXT_MAX]}"
        if location
        else "a redirect without a Location"
    )
    return (
        f"the API answered {response.status_code} ({where}): SUPALYTICS['ENDPOINT'] is wrong; "
        "set it to the address the API names"
    )


@sensitive_variables("api_key", "headers")
def post_event(payload: dict[str, Any], idempotency_key: str, api_key: str) -> Outcome:
    """POST one event. Never raises, never follows a redirect, never takes much longer than
    ``request_deadline()``, reads at most ``MAX_ANSWER_BYTES`` of the answer, and scrubs the
    outcome's error text (``scrub``)."""
    began = time.monotonic()
    outcome = replace(_post(payload, idempotency_key, api_key), seconds=time.monotonic() - began)
    return replace(outcome, error=scrub(outcome.error, api_key)) if outcome.error else outcome


@sensitive_variables("api_key", "headers")
def _post(payload: dict[str, Any], idempotency_key: str, api_key: str) -> Outcome:
    problem = api_key_problem(api_key)
    if problem:
        return Outcome(Kind.RETRY, None, f"not sent: {problem}")
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key,
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "identity",  # the body is read raw, so bounded as it arrives
    }
    endpoint = conf.ENDPOINT
    deadline = request_deadline()
    connect = min(CONNECT_TIMEOUT_MAX, deadline)
    late = Outcome(Kind.RETRY, None, f"timeout: no complete answer within {deadline:g} s")
    sent = time.time()
    response: requests.Response | None = None
    body = b""
    with deadline_watch(deadline) as watch:
        try:
            response = get_session().post(
                endpoint,
                data=json.dumps(payload, separators=(",", ":"), cls=MetadataEncoder).encode(),
                headers=headers,
                timeout=(connect, deadline),
                allow_redirects=False,
                stream=True,
            )
            try:
                body = _read_body(response)
            finally:
                response.close()
        except requests.ConnectTimeout:
            return Outcome(Kind.RETRY, None, f"timeout: no connection within {connect:g} s")
        except Exception as exc:  # a timeout, a refused connection, a bug in an adapter
            if not _accepted(response):
                if watch.fired or isinstance(exc, _TIMEOUTS):
                    return late
                return Outcome(Kind.RETRY, None, f"{type(exc).__name__}: {exc}")
    # A 2xx's status line says the API took the event: it is sent, even if the rest of the
    # answer was cut off (sending it again would count it twice where keys are ignored).
    if response is None or (watch.fired and not _accepted(response)):
        return late  # cut off: what arrived is not the whole answer
    received = time.time()
    clock = server_clock(endpoint)
    clock.observe(response.headers.get("X-RateLimit-Reset"), sent, received)
    # The server's time (its headers' times are on its clock), at the earliest it can be.
    now = received + clock.earliest()
    kind = classify(response.status_code)
    if kind is Kind.SENT:
        wait = None
        if response.headers.get("X-RateLimit-Remaining", "").strip() == "0":
            reset = parse_ratelimit_reset(response.headers.get("X-RateLimit-Reset"), now)
            # On the server's clock, and capped like a 429's wait whatever the header said.
            wait = None if reset is None else min(reset, RATE_LIMIT_WAIT_MAX)
        return Outcome(kind, response.status_code, "", wait)
    if kind is Kind.DEFERRED:
        error = _redirect_error(response, api_key)
        return Outcome(kind, response.status_code, error, MISCONFIGURED_WAIT)
    text = _decode(body, response.encoding)
    if response.status_code in SETTING_ERRORS:
        return Outcome(
            kind, response.status_code, setting_error(response.status_code, text, api_key)
        )
    error = error_text(text, response.reason or "")
    if kind is Kind.RATE_LIMITED:
        wait = rate_limit_wait(response.headers, now, RATE_LIMIT_WAIT_MAX)
        return Outcome(kind, response.status_code, error, wait)
    return Outcome(kind, response.status_code, error)
