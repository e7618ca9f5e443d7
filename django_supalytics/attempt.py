"""One row's attempt, on a request thread: the outage circuit, a rate-limit slot, the POST,
and what the answer means for every sender of the key. No database access here: the sender
(``delivery``) records what this returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from django.views.decorators.debug import sensitive_variables

from . import client
from .client import Kind, Outcome
from .outage import get_circuit
from .ratelimit import Reservation, get_limiter
from .scrubbing import ERROR_TEXT_MAX, scrub

if TYPE_CHECKING:
    from .models import OutboxEvent

logger = logging.getLogger("django_supalytics")

#: A request thread sleeps in place for its rate-limit slot, or for the end of a pause, up to
#: this long; past it, the row is handed back, due when the slot (or the pause's end) comes.
SLOT_SLEEP_MAX = 1.0
#: While the limiter's store cannot be reached, rows are handed back for this long.
LIMITER_DOWN_PAUSE = 2.0


@dataclass(frozen=True)
class Deferred:
    """No request was made: due again in ``delay`` seconds."""

    delay: float
    error: str = ""


class Attempts:
    """The attempts of one send, made on its pool threads, and the gate that stops the ones not
    started yet (the first reason to stop wins).

    Its methods hide the key (a local named ``api_key``, or ``headers``) in their frames and in
    those they call, from Django's debug page and error mails (``sensitive_variables``)."""

    @sensitive_variables("api_key", "headers")
    def __init__(self, api_key: str, sleep: Callable[[float], None]) -> None:
        self.api_key = api_key
        self.sleep = sleep
        self._lock = threading.Lock()
        self.stopped: Deferred | None = None
        #: The sender is done: no request starts from here on, not even a probe.
        self.halted = False
        try:
            self.limiter = get_limiter(api_key)
            self.circuit = get_circuit(api_key)
        except Exception as exc:  # the cache's client cannot be made (redis-py missing, ...)
            # Stopped before the first attempt: the sender hands every row back (E025 says why).
            logger.exception("supalytics: rate limiter unavailable; pausing")
            self.stop(self._limiter_down(exc))

    def _limiter_down(self, exc: Exception) -> Deferred:
        error = scrub(f"not sent: rate limiter unavailable: {exc!r}", self.api_key)
        return Deferred(LIMITER_DOWN_PAUSE, error)

    def halt(self, reason: Deferred) -> None:
        """Stop, probes included: the sender records no answer after this."""
        self.halted = True
        self.stop(reason)

    def stop(self, reason: Deferred) -> Deferred:
        """Stop the attempts not started yet; the reason in force (the first one given)."""
        with self._lock:
            if self.stopped is None:
                self.stopped = reason
            return self.stopped

    @sensitive_variables("api_key", "headers")
    def attempt(self, event: OutboxEvent) -> Outcome | Deferred:
        try:
            return self._attempt(event)
        except Exception:  # a bug: hand the row back rather than leave it leased
            logger.exception("supalytics: sending event %s failed", event.pk)
            return Deferred(LIMITER_DOWN_PAUSE, "not sent: an error in the worker (see its log)")

    @sensitive_variables("api_key", "headers")
    def _attempt(self, event: OutboxEvent) -> Outcome | Deferred:
        if self.stopped:
            return self.stopped
        try:
            admission = self.circuit.admit()
            if not admission.allowed:
                delay = max(admission.delay, 0.1)
                error = f"not sent: the API is failing; next try in {delay:.0f} s"
                return self.stop(Deferred(delay, error))
            reservation = self.limiter.reserve(SLOT_SLEEP_MAX)
            if not reservation.granted and reservation.delay <= SLOT_SLEEP_MAX:
                # A short pause (a 429 near a window's end): waited out in place, like a slot.
                self.sleep(reservation.delay)
                reservation = self.limiter.reserve(SLOT_SLEEP_MAX)
            if reservation.granted and reservation.delay > 0:
                self.sleep(reservation.delay)
                paused = self.limiter.paused()  # another worker's 429 meanwhile stops us too
                if paused > 0:
                    reservation = Reservation(False, paused)
        except Exception as exc:
            # The limiter's store (Redis) is down: sending without it could break the limit for
            # every worker, so sending pauses and the rows are handed back.
            logger.warning("supalytics: rate limiter unavailable (%s); pausing", exc)
            return self.stop(self._limiter_down(exc))
        if not reservation.granted:  # paused after a 429, or the schedule is full
            return self.stop(Deferred(reservation.delay))
        # The send stopped while this thread waited for its slot; but a probe goes out all the
        # same: it is the one request that can find the API healed (the circuit lets no other
        # through until its answer, or for the probe's deadline).
        if self.stopped and (self.halted or not admission.probe):
            return self.stopped
        outcome = client.post_event(event.payload, str(event.uuid), self.api_key)
        return self._judge(outcome, admission.probe)

    @sensitive_variables("api_key", "headers")
    def _judge(self, outcome: Outcome, probe: bool) -> Outcome:
        """Tell the circuit and the limiter what the answer means for every sender."""
        failed = outcome.kind is Kind.RETRY
        if outcome.wait:  # a 429, no requests left in the window, a redirect: everyone waits
            try:
                self.limiter.pause(outcome.wait)
            except Exception as exc:  # the answer is in hand and must be recorded
                logger.warning("supalytics: could not pause the rate limiter: %r", exc)
                self.stop(Deferred(outcome.wait))
        try:
            outage = self.circuit.report(not failed, probe)
        except Exception as exc:
            logger.warning("supalytics: could not report to the outage circuit: %r", exc)
            outage = 0.0
        if outage:
            error = f"not sent: the API is failing; next try in {outage:.0f} s"
            self.stop(Deferred(outage, error))
            # The API fails for everyone: the row spends no attempt on it.
            note = f"{outcome.error} (the API is failing for everyone; no attempt spent)"
            return replace(outcome, kind=Kind.DEFERRED, error=note[:ERROR_TEXT_MAX], wait=outage)
        return outcome
