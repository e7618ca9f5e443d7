"""One send: claim, take a rate-limit slot, POST, record, for rows already claimed.

A send owns what it claims. Requests run on a small thread pool that never touches the
database; the calling thread records each answer as it arrives (one UPDATE, through the
database retry layer), claims more when asked to, renews the leases of rows still waiting, and,
whatever ends the send (an exception, a database error that outlasts its retries, the worker
shutting down), closes the gate so that no further request starts, waits for those in flight,
and records them or hands them back. Signals go out once that is done, so a slow receiver
cannot delay a lease renewal.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from django.views.decorators.debug import sensitive_variables

from . import client, shutdown, state
from .attempt import Attempts, Deferred
from .client import Kind, Outcome
from .conf import conf
from .models import OutboxEvent, outbox_alias
from .queryset import retrying
from .signals import event_delivered, event_failed, send_safely

logger = logging.getLogger("django_supalytics")


@dataclass(frozen=True)
class Result:
    """What became of one row's turn to be sent."""

    event_id: int
    outcome: Kind
    #: Seconds after which the row is due again, when a hand-over for then would help.
    retry_in: float | None = None


@sensitive_variables("api_key")
def _why_not_sendable() -> str | None:
    if not conf.ENABLED:
        return "SUPALYTICS['ENABLED'] is False"
    api_key = conf.API_KEY
    if not api_key:
        return "no API key is set"
    problem = client.api_key_problem(api_key)
    if problem:
        # A misconfiguration: the rows wait until the key is fixed. The key is never written out.
        logger.error("supalytics: %s; events not sent", problem)
    return problem


def send(
    rows: list[OutboxEvent],
    more: Callable[[Collection[int]], list[OutboxEvent]] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Result]:
    """Send claimed rows, in the order claimed, up to ``SEND_CONCURRENCY`` requests at a time,
    and record each outcome as it arrives.

    ``more(exclude)`` claims further rows (never those of ``exclude``, rows retried during this
    send); it is called whenever the rows in hand no longer keep every thread busy, until it
    returns none, sending has to wait (a pause, the outage circuit) or the worker is shutting
    down. Their results follow those of ``rows``, one per row.
    """
    if not rows:
        return []
    alias = rows[0]._state.db or outbox_alias()
    reason = _why_not_sendable()
    if reason:  # no hand-over follows: the sweeper or the next drain has them
        error = f"not sent: {reason}"
        for event in rows:
            retrying(alias, lambda e=event: e.release(conf.MAX_COUNTDOWN, error))  # type: ignore[misc]
        return [Result(event.pk, Kind.DEFERRED) for event in rows]
    return _Send(alias, str(conf.API_KEY), sleep).run(rows, more)


class _Send:
    """The database side of one send, on the calling thread. It alone starts requests, one for
    each answer it has recorded, so at most ``SEND_CONCURRENCY`` answers are ever unrecorded,
    and none starts while recording fails."""

    @sensitive_variables("api_key")
    def __init__(self, alias: str, api_key: str, sleep: Callable[[float], None]) -> None:
        self.alias = alias
        self.attempts = Attempts(api_key, sleep)
        self.size = max(1, conf.SEND_CONCURRENCY)
        self.pool = _executor(self.size)
        self.waiting: deque[OutboxEvent] = deque()
        self.flights: dict[Future[Outcome | Deferred], OutboxEvent] = {}
        # (row, lease token): a row claimed again later, under a new token, is not lost.
        self.lost: set[tuple[int, object]] = set()
        self.order: list[int] = []
        self.results: dict[int, Result] = {}
        self.retried: set[int] = set()
        self.to_signal: list[tuple[OutboxEvent, Kind]] = []

    def run(
        self, rows: list[OutboxEvent], more: Callable[[Collection[int]], list[OutboxEvent]] | None
    ) -> list[Result]:
        renew_every = conf.LEASE_SECONDS / 3
        renew_at = time.monotonic() + renew_every
        try:
            self._add(rows)
            while True:
                self._start()
                # Claim the next rows while those in hand still keep every thread busy.
                if more is not None and len(self.waiting) + len(self.flights) <= self.size:
                    extra = [] if self._must_stop() else more(self.retried)
                    if not extra:
                        more = None
                    self._add(extra)
                self._start()
                if not self.flights:
                    break
                timeout = max(0.0, renew_at - time.monotonic())
                done, _ = wait(list(self.flights), timeout=timeout, return_when=FIRST_COMPLETED)
                self._record(done)
                if time.monotonic() >= renew_at:
                    self._renew()
                    renew_at = time.monotonic() + renew_every
        finally:
            self._finish()
            self._signal()  # for what was recorded, also when the send raised
        return [self.results[pk] for pk in dict.fromkeys(self.order)]

    def _must_stop(self) -> bool:
        if shutdown.requested():
            self.attempts.stop(Deferred(0.0, "not sent: the worker is shutting down"))
        return self.attempts.stopped is not None

    def _add(self, rows: list[OutboxEvent]) -> None:
        self.order += [event.pk for event in rows]
        self.waiting.extend(rows)

    def _start(self) -> None:
        """Start requests for waiting rows while a thread is free; once the send has to stop,
        hand the waiting rows back instead."""
        while self.waiting and (self._must_stop() or len(self.flights) < self.size):
            event = self.waiting.popleft()
            if (event.pk, event.lease_owner) in self.lost:
                self.results[event.pk] = Result(event.pk, Kind.SKIPPED)
            elif self.attempts.stopped:
                self.results[event.pk] = self._store(event, self.attempts.stopped)
            else:
                self.flights[self.pool.submit(self.attempts.attempt, event)] = event

    def _finish(self) -> None:
        """However the send ended: no request starts from here on, the waiting rows are handed
        back, and those in flight end (within their deadline) and are recorded."""
        self.attempts.halt(Deferred(0.0, "not sent: the sender stopped"))
        try:
            self._start()
            while self.flights:
                done, _ = wait(list(self.flights), return_when=FIRST_COMPLETED)
                self._record(done)
        except Exception:
            held = sorted(event.pk for event in [*self.flights.values(), *self.waiting])
            logger.exception("supalytics: could not record events %s; their lease runs out", held)
            wait(list(self.flights))  # no request of ours goes on after the send returns

    def _record(self, done: Collection[Future[Outcome | Deferred]]) -> None:
        for future in done:
            event = self.flights[future]
            self.results[event.pk] = self._store(event, future.result())
            del self.flights[future]  # only once recorded: else _finish tries again

    def _store(self, event: OutboxEvent, outcome: Outcome | Deferred) -> Result:
        if isinstance(outcome, Deferred):
            # A longer wait (an outage's next probe) is taken in steps of at most MAX_COUNTDOWN,
            # so that a hand-over for then never comes near a broker's visibility timeout.
            delay = min(outcome.delay, conf.MAX_COUNTDOWN)
            released = retrying(self.alias, lambda: event.release(delay, outcome.error))
            return Result(event.pk, Kind.DEFERRED if released else Kind.SKIPPED, delay)
        recorded = retrying(self.alias, lambda: event.record(outcome))
        if recorded is None:
            logger.warning("supalytics: lease on event %s was lost; outcome not recorded", event.pk)
            return Result(event.pk, Kind.SKIPPED)
        kind, retry_in = recorded
        if kind is Kind.RETRY:
            self.retried.add(event.pk)
        if kind in (Kind.SENT, Kind.FAILED):
            self.to_signal.append((event, kind))
        return Result(event.pk, kind, retry_in)

    def _renew(self) -> None:
        by_token: dict[object, list[int]] = {}
        for event in [*self.flights.values(), *self.waiting]:
            by_token.setdefault(event.lease_owner, []).append(event.pk)
        rows = OutboxEvent.objects.using(self.alias)
        for token, pks in by_token.items():
            held = retrying(self.alias, lambda: rows.renew(token, pks, conf.LEASE_SECONDS))  # type: ignore[arg-type]  # noqa: B023
            lost = set(pks) - held
            if lost:
                logger.warning(
                    "supalytics: leases on events %s were lost; not sending", sorted(lost)
                )
                self.lost |= {(pk, token) for pk in lost}

    def _signal(self) -> None:
        if not self.to_signal:
            return
        events = [event for event, _ in self.to_signal]
        names = ("next_attempt_at", "sent_at", "failed_at")
        rows = OutboxEvent.objects.using(self.alias).filter(pk__in=[e.pk for e in events])
        try:  # the times the database's clock wrote, for the receivers
            times = {pk: rest for pk, *rest in rows.values_list("pk", *names)}
        except Exception:
            times = {}
        for event, kind in self.to_signal:
            for name, value in zip(names, times.get(event.pk, ()), strict=False):
                setattr(event, name, value)
            if kind is Kind.SENT:
                send_safely(event_delivered, OutboxEvent, event=event)
            else:
                logger.warning(
                    "supalytics: event %s (%s) failed: %s", event.pk, event.name, event.last_error
                )
                send_safely(event_failed, OutboxEvent, event=event, error=event.last_error)


def _executor(size: int) -> ThreadPoolExecutor:
    """The request threads, one pool per process and size, kept in ``state``."""
    process = state.current()
    with process.lock:
        if size not in process.executors:
            pool = ThreadPoolExecutor(size, thread_name_prefix="supalytics-send")
            process.executors[size] = pool
        return process.executors[size]
