"""Moving outbox rows to the API: claim, send, record. Used by the Celery tasks and commands.

Each step that touches the database is its own short transaction; none is open while a request
is in flight. A claim is a lease: the row is ``sending`` until ``lease_expires_at``, and only
the holder of ``lease_owner`` may record its outcome, so a worker that stalled past its lease
cannot overwrite what another worker recorded.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import InterfaceError, OperationalError, transaction
from django.db.models import DurationField, ExpressionWrapper, F, QuerySet

from . import client
from .client import Kind, Outcome
from .conf import conf
from .models import OutboxEvent, OutboxEventQuerySet, db_now, outbox_alias
from .outage import Circuit, get_circuit
from .ratelimit import RateLimiter, get_limiter
from .signals import event_delivered, event_failed, send_safely

logger = logging.getLogger("django_supalytics")

Status = OutboxEvent.Status

#: A worker sleeps in place for its rate-limit slot up to this long; past it, it hands the row
#: back and asks to be run again later.
SLOT_SLEEP_MAX = 1.0
#: While the limiter's store cannot be reached, rows are handed back for this long.
LIMITER_DOWN_PAUSE = 2.0
#: Recording outcomes already obtained is tried this many times (a locked or restarting
#: database) before the error is raised: an answered row must not wait for its lease to expire.
RECORD_TRIES = 5
#: A task that finds more rows due once its own are all in flight claims the oldest of them and
#: goes on, for up to this long: a backlog is sent without a pause between tasks (on a WAN,
#: waiting for a batch's last answers before the next claim left the rate limit unused).
DRAIN_SECONDS = 30.0
DRAIN_POLL = 0.02


@dataclass(frozen=True)
class Result:
    """What became of one delivery attempt."""

    event_id: int
    outcome: Kind
    #: Seconds after which the row is due again, when a re-enqueue would help.
    retry_in: float | None = None


def claim(
    ids: Iterable[int] | None = None,
    limit: int = 1,
    using: str | None = None,
    exclude: Collection[int] = (),
) -> list[OutboxEvent]:
    """Lease up to ``limit`` due rows (longest due first), or those of ``ids`` that are due,
    leaving out the pks in ``exclude``.

    Everything happens on the outbox's database (``using``, else the router's for
    ``OutboxEvent``), in one transaction there; due times and the lease come from that
    database's clock.
    """
    alias = using or outbox_alias()
    rows = OutboxEvent.objects.using(alias)
    candidates = rows if ids is None else rows.filter(pk__in=list(ids))
    if exclude:
        candidates = candidates.exclude(pk__in=list(exclude))
    token = uuid.uuid4()
    with transaction.atomic(using=alias):
        # Pending rows, then expired leases, each in the order of its index: the scan stops
        # after ``limit`` rows, so InnoDB locks no more than it returns (a sort would read and
        # lock every due row, and concurrent claimers would skip them all), and PostgreSQL
        # sorts nothing however large a backlog.
        pks = _lock(candidates.due().order_by("next_attempt_at", "pk"), limit)
        if len(pks) < limit:
            expired = candidates.expired_leases().order_by("lease_expires_at", "pk")
            pks += _lock(expired, limit - len(pks))
        if not pks:
            return []
        # Re-check the condition in the UPDATE: on backends without row locks (SQLite) a
        # concurrent claimer may have taken a row since the SELECT.
        rows.claimable().filter(pk__in=pks).update(
            status=Status.SENDING,
            lease_owner=token,
            lease_expires_at=db_now(conf.LEASE_SECONDS),
        )
        # Read back on the same connection (not a replica the router may pick for reads), by
        # primary key: lease_owner has no index.
        claimed = rows.filter(pk__in=pks, lease_owner=token)
        return list(claimed.order_by("next_attempt_at", "pk"))


def _lock(rows: OutboxEventQuerySet, limit: int) -> list[int]:
    return list(rows.select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit])


def _rows(event: OutboxEvent) -> OutboxEventQuerySet:
    return OutboxEvent.objects.using(event._state.db or outbox_alias())


def _update(event: OutboxEvent, outcome: Outcome) -> tuple[Result, Kind | None]:
    """Store the outcome of a request for a leased row; return the kind to signal, if any."""
    recorded = event.record(outcome)
    if recorded is None:
        # The lease expired and another worker took the row over; its record wins.
        logger.warning("supalytics: lease on event %s was lost; outcome not recorded", event.pk)
        return Result(event.pk, Kind.SKIPPED), None
    kind, retry_in = recorded
    return Result(event.pk, kind, retry_in), kind


_DB_TIMES = ("next_attempt_at", "sent_at", "failed_at")


def _load_db_times(events: list[OutboxEvent]) -> None:
    """Copy the times the database's clock wrote into the in-memory rows (for the signals)."""
    if not events:
        return
    times = {
        pk: rest
        for pk, *rest in _rows(events[0])
        .filter(pk__in=[event.pk for event in events])
        .values_list("pk", *_DB_TIMES)
    }
    for event in events:
        for name, value in zip(_DB_TIMES, times.get(event.pk, ()), strict=False):
            setattr(event, name, value)


def _signal(event: OutboxEvent, kind: Kind | None) -> None:
    if kind is Kind.SENT:
        send_safely(event_delivered, OutboxEvent, event=event)
    elif kind is Kind.FAILED:
        logger.warning(
            "supalytics: event %s (%s) failed: %s", event.pk, event.name, event.last_error
        )
        send_safely(event_failed, OutboxEvent, event=event, error=event.last_error)


@dataclass(frozen=True)
class _Deferred:
    """No request was made: try again in ``delay`` seconds (``None``: delivery is off)."""

    delay: float | None
    error: str = ""


def _attempt(
    event: OutboxEvent,
    api_key: str,
    limiter: RateLimiter,
    circuit: Circuit,
    stop: list[_Deferred],
    sleep: Callable[[float], None],
) -> Outcome | _Deferred:
    """Pass the outage circuit, take a rate-limit slot and POST: the network part, with no
    database access."""
    if stop:
        return stop[0]
    try:
        admission = circuit.admit()
        if not admission.allowed:
            # The API fails for everyone: no request, no attempt spent; the batch waits.
            error = f"not sent: the API is failing; next try in {admission.delay:.0f} s"
            stop.append(_Deferred(max(admission.delay, 0.1), error))
            return stop[0]
        reservation = limiter.reserve(SLOT_SLEEP_MAX)
    except Exception as exc:
        # The limiter's store (Redis) is unreachable: sending without it could break the limit
        # for every worker, so this batch pauses and is handed back, due again shortly.
        logger.warning("supalytics: rate limiter unavailable (%s); pausing", type(exc).__name__)
        error = f"not sent: rate limiter unavailable: {exc!r}"[: client.ERROR_TEXT_MAX]
        stop.append(_Deferred(LIMITER_DOWN_PAUSE, error))
        return stop[0]
    if not reservation.granted:
        # Paused after a 429, or the schedule is full: no attempt; the rest of the batch waits.
        stop.append(_Deferred(reservation.delay))
        return stop[0]
    if reservation.delay > 0:
        sleep(reservation.delay)
        # A pause another worker set meanwhile (its 429) also stops a slot reserved before it.
        paused = _paused(limiter)
        if paused > 0:
            stop.append(_Deferred(paused))
            return stop[0]
    outcome = client.post_event(event.payload, str(event.uuid), api_key)
    try:
        opened = circuit.report(outcome.kind is not Kind.RETRY, admission.probe)
    except Exception as exc:  # the answer is in hand and must be recorded
        logger.warning("supalytics: could not report to the outage circuit: %r", exc)
        opened = 0.0
    if opened:
        logger.warning("supalytics: the API is failing; sending paused for %.0f s", opened)
        stop.append(_Deferred(opened, f"not sent: the API is failing; next try in {opened:.0f} s"))
    if outcome.wait:
        try:
            limiter.pause(outcome.wait)
        except Exception as exc:
            # The answer is in hand and must be recorded; the pause is only lost.
            logger.warning("supalytics: could not pause the rate limiter: %r", exc)
            stop.append(_Deferred(outcome.wait))
    return outcome


def _paused(limiter: RateLimiter) -> float:
    try:
        return limiter.paused()
    except Exception:  # the store is down: the next reserve() says so
        return 0.0


def send(event: OutboxEvent, sleep: Callable[[float], None] = time.sleep) -> Result:
    """Send one leased row: take a rate-limit slot, POST, record."""
    return send_batch([event], sleep)[0]


def send_batch(
    batch: list[OutboxEvent],
    sleep: Callable[[float], None] = time.sleep,
    more: Callable[[], list[OutboxEvent]] | None = None,
) -> list[Result]:
    """Send claimed rows, in the order claimed, up to ``SEND_CONCURRENCY`` requests at a time.

    Requests overlap so that one worker process is not held to one request per round trip; the
    shared limiter still spaces them. Only the task's own thread touches the database: each
    outcome is recorded as soon as it arrives (a short transaction for what arrived together),
    and the lease of the rows still waiting is renewed every third of ``LEASE_SECONDS``, so a
    slow API never lets another worker take over, and POST again, a row this one holds. When
    the limiter says wait (or delivery is off), the rows not sent are handed back, ``deferred``.

    ``more`` claims further rows: it is called whenever every row so far is in flight, for up
    to ``DRAIN_SECONDS``, until it returns none or sending has to wait; its rows are sent and
    recorded the same way, and their results follow those of ``batch``.
    """
    if not batch:
        return []
    batch = list(batch)
    api_key = conf.API_KEY
    problem = client.api_key_problem(api_key) if api_key else None
    if not conf.ENABLED or not api_key or problem:
        if not conf.ENABLED:
            reason = "SUPALYTICS['ENABLED'] is False"
        elif not api_key:
            reason = "no API key is set"
        else:
            # A misconfiguration, like no key: the rows wait (not failed, not retried in a
            # loop of requests) until the key is fixed. The key itself is never written out.
            reason = str(problem)
            logger.error("supalytics: %s; %d event(s) not sent", reason, len(batch))
        outcomes: list[Outcome | _Deferred] = [_Deferred(None, f"not sent: {reason}")] * len(batch)
        return _record(batch, outcomes, sleep)
    stop: list[_Deferred] = []
    limiter = get_limiter(api_key)
    circuit = get_circuit(api_key)
    lost: set[int] = set()  # rows whose lease another worker took over: never POSTed here

    def attempt(event: OutboxEvent) -> Outcome | _Deferred | None:
        if event.pk in lost:
            return None
        try:
            return _attempt(event, api_key, limiter, circuit, stop, sleep)
        except Exception:  # a bug: hand the row back rather than leave it leased
            logger.exception("supalytics: sending event %s failed", event.pk)
            return _Deferred(LIMITER_DOWN_PAUSE, "not sent: an error in the worker (see its log)")

    concurrency = conf.SEND_CONCURRENCY if more else min(conf.SEND_CONCURRENCY, len(batch))
    executor = _executor(max(1, concurrency))
    futures = {executor.submit(attempt, event): event for event in batch}
    results: dict[int, Result] = {}
    pending = set(futures)
    renew_every = conf.LEASE_SECONDS / 3
    started = time.monotonic()
    renew_at = started + renew_every
    while pending:
        timeout = max(0.0, renew_at - time.monotonic())
        if more is not None:  # look often: the last row may be taken up by a thread any moment
            timeout = min(timeout, DRAIN_POLL)
        done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
        arrived = [(futures[future], future.result()) for future in done]
        for event, outcome in arrived:
            if outcome is None:
                results[event.pk] = Result(event.pk, Kind.SKIPPED)
        answered = [(event, outcome) for event, outcome in arrived if outcome is not None]
        if answered:
            recorded = _record([e for e, _ in answered], [o for _, o in answered], sleep)
            results.update((result.event_id, result) for result in recorded)
        if more is not None and all(future.running() for future in pending):
            # Every row is in flight: claim the next ones now, so that the threads go on
            # from slot to slot instead of waiting for these answers first.
            extra = [] if stop or time.monotonic() - started > DRAIN_SECONDS else more()
            if not extra:
                more = None
            for event in extra:
                future = executor.submit(attempt, event)
                futures[future] = event
                pending.add(future)
            batch += extra
        if pending and time.monotonic() >= renew_at:
            waiting = [futures[future] for future in pending]
            lost.update(_renew_leases(waiting))
            renew_at = time.monotonic() + renew_every
    return [results[event.pk] for event in batch]


def _renew_leases(events: list[OutboxEvent]) -> set[int]:
    """Extend the lease of rows still held; return the pks whose lease was lost."""
    if not events:
        return set()
    pks = [event.pk for event in events]
    by_lease: dict[Any, list[int]] = {}
    for event in events:
        by_lease.setdefault(event.lease_owner, []).append(event.pk)
    kept: set[int] = set()
    try:
        with transaction.atomic(using=events[0]._state.db or outbox_alias()):
            for owner, owned in by_lease.items():  # one claim, one lease token
                held = _rows(events[0]).filter(
                    pk__in=owned, lease_owner=owner, status=Status.SENDING
                )
                mine = set(held.select_for_update().values_list("pk", flat=True))
                held.filter(pk__in=mine).update(lease_expires_at=db_now(conf.LEASE_SECONDS))
                kept |= mine
    except (OperationalError, InterfaceError):
        logger.warning("supalytics: could not renew leases; trying again", exc_info=True)
        return set()
    lost = set(pks) - kept
    if lost:
        logger.warning("supalytics: leases on events %s were lost; not sending them", sorted(lost))
    return lost


def _record(
    batch: list[OutboxEvent], outcomes: list[Outcome | _Deferred], sleep: Callable[[float], None]
) -> list[Result]:
    """Record outcomes (one transaction), then send the signals."""
    results, to_signal = _record_all(batch, outcomes, sleep)
    _load_db_times([event for event, _ in to_signal])
    for event, kind in to_signal:
        _signal(event, kind)
    return results


def _record_all(
    batch: list[OutboxEvent],
    outcomes: list[Outcome | _Deferred],
    sleep: Callable[[float], None],
) -> tuple[list[Result], list[tuple[OutboxEvent, Kind | None]]]:
    """Record every outcome in one transaction, trying again on a transient database error."""
    for attempt in range(1, RECORD_TRIES + 1):
        snapshot = [dict(event.__dict__) for event in batch]
        try:
            results: list[Result] = []
            to_signal: list[tuple[OutboxEvent, Kind | None]] = []
            with transaction.atomic(using=batch[0]._state.db or outbox_alias()):
                for event, outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, _Deferred):
                        if outcome.delay is None:  # delivery is off: no message follows
                            event.release(conf.MAX_COUNTDOWN, outcome.error)
                            results.append(Result(event.pk, Kind.DEFERRED))
                            continue
                        # A longer wait (an outage's next probe a minute away) is taken in
                        # steps: the row's message comes back within MAX_COUNTDOWN, never
                        # left to the sweeper, and finds the row due.
                        delay = min(outcome.delay, conf.MAX_COUNTDOWN)
                        event.release(delay, outcome.error)
                        results.append(Result(event.pk, Kind.DEFERRED, delay))
                    else:
                        result, kind = _update(event, outcome)
                        results.append(result)
                        if kind is not None:
                            to_signal.append((event, kind))
            return results, to_signal
        except (OperationalError, InterfaceError):
            # _update set attributes on the rows (the lease among them); the transaction did
            # not happen, so they go back to what they were.
            for event, saved in zip(batch, snapshot, strict=True):
                event.__dict__.update(saved)
            if attempt == RECORD_TRIES:
                raise
            logger.warning("supalytics: recording outcomes failed; trying again", exc_info=True)
            sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


_executors: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _executor(size: int) -> ThreadPoolExecutor:
    # One pool per process (a forked worker child starts its own) and size.
    key = (os.getpid(), size)
    if key not in _executors:
        _executors[key] = ThreadPoolExecutor(size, thread_name_prefix="supalytics-send")
    return _executors[key]


def deliver(event_id: int, using: str | None = None) -> Result:
    """Claim and send one row, if it is due and nobody else holds it."""
    results = deliver_many([event_id], using=using)
    return results[0] if results else Result(event_id, Kind.SKIPPED)


def deliver_many(
    event_ids: list[int],
    sleep: Callable[[float], None] = time.sleep,
    using: str | None = None,
    drain: bool = False,
) -> list[Result]:
    """Claim those of ``event_ids`` that are due and free, in one transaction, and send them.

    Rows not due yet (a message that arrived early) come back ``deferred`` with the time until
    they are due (by the database's clock); rows already sent, or held by another worker, come
    back ``skipped``. With ``drain``, once those are in flight, other due rows follow, oldest
    first, ``BATCH_SIZE`` at a time, for up to ``DRAIN_SECONDS`` (``send_batch``'s ``more``);
    their results come after those of ``event_ids``.
    """
    alias = using or outbox_alias()
    claimed = claim(event_ids, limit=len(event_ids), using=alias)
    more = (lambda: claim(limit=conf.BATCH_SIZE, using=alias)) if drain else None
    results = send_batch(claimed, sleep, more)
    missing = set(event_ids) - {event.pk for event in claimed}
    if missing:
        early = dict(
            OutboxEvent.objects.using(alias)
            .filter(pk__in=missing, status=Status.PENDING, next_attempt_at__gt=db_now())
            .annotate(
                wait=ExpressionWrapper(
                    F("next_attempt_at") - db_now(), output_field=DurationField()
                )
            )
            .values_list("pk", "wait")
        )
        for pk in sorted(missing):
            if pk in early:
                results.append(Result(pk, Kind.DEFERRED, max(0.0, early[pk].total_seconds())))
            else:
                results.append(Result(pk, Kind.SKIPPED))
    return results


def count_outcomes(results: list[Result]) -> dict[str, int]:
    """``{"sent": n, "retry": n, ...}``: what a task reports."""
    outcomes: dict[str, int] = {}
    for result in results:
        outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1
    return outcomes


def deliver_due(
    limit: int,
    sleep: Callable[[float], None] = time.sleep,
    using: str | None = None,
    batch_size: int | None = None,
) -> list[Result]:
    """Claim up to ``limit`` due rows, longest due first, in batches of ``batch_size``
    (default ``BATCH_SIZE``), and send them.

    A row is sent at most once per call: one whose retry (jittered, possibly a few milliseconds
    away) fell due during the call waits for the next one.
    """
    size = batch_size or conf.BATCH_SIZE
    results: list[Result] = []
    retried: set[int] = set()
    while len(results) < limit:
        batch = claim(limit=min(size, limit - len(results)), using=using, exclude=retried)
        if not batch:
            break
        sent = send_batch(batch, sleep)
        retried.update(result.event_id for result in sent if result.outcome is Kind.RETRY)
        results.extend(sent)
        if results[-1].outcome is Kind.DEFERRED:
            break
    return results


def outbox_aliases() -> list[str]:
    """Every database the outbox lives in: the router's for ``OutboxEvent``, then those of
    ``SUPALYTICS["OUTBOX_DATABASES"]`` (where ``track(using=...)`` writes too)."""
    aliases = [outbox_alias()]
    aliases.extend(alias for alias in conf.OUTBOX_DATABASES if alias not in aliases)
    return aliases


def reclaim_expired(using: str | None = None) -> int:
    """Hand rows whose lease ran out (a worker died mid-send) back to the queue."""
    return (
        OutboxEvent.objects.using(using or outbox_alias())
        .expired_leases()
        .update(status=Status.PENDING, lease_owner=None, lease_expires_at=None)
    )


def due(grace: float = 0.0, using: str | None = None) -> QuerySet[OutboxEvent]:
    """Pending rows that have been due for at least ``grace`` seconds, longest due first."""
    rows = OutboxEvent.objects.using(using or outbox_alias())
    return rows.due(grace).order_by("next_attempt_at", "pk")


def purgeable(
    older_than: timedelta,
    *,
    include_failed: bool = False,
    failed_older_than: timedelta | None = None,
    using: str | None = None,
) -> QuerySet[OutboxEvent]:
    """Rows sent longer than ``older_than`` ago, and, when asked, rows that failed longer than
    ``failed_older_than`` (default: ``older_than``) ago."""
    failed_age = None
    if include_failed:
        failed_age = older_than if failed_older_than is None else failed_older_than
    return OutboxEvent.objects.using(using or outbox_alias()).purgeable(older_than, failed_age)


def purge(
    older_than: timedelta,
    *,
    include_failed: bool = False,
    failed_older_than: timedelta | None = None,
    batch_size: int | None = None,
    using: str | None = None,
) -> int:
    """Delete what ``purgeable`` selects, in batches, so no transaction grows large.

    Each DELETE repeats the condition (status and age), so a row retried or re-sent since it
    was selected stays.
    """
    alias = using or outbox_alias()
    rows = purgeable(
        older_than,
        include_failed=include_failed,
        failed_older_than=failed_older_than,
        using=alias,
    )
    size = batch_size or conf.PURGE_BATCH_SIZE
    deleted = 0
    while True:
        pks = list(rows.values_list("pk", flat=True)[:size])
        if not pks:
            return deleted
        # A raw DELETE: Django's delete() may first SELECT the rows, then delete them by
        # primary key alone, losing the condition.
        deleted += rows.filter(pk__in=pks)._raw_delete(alias)


def purge_expired(using: str | None = None, batch_size: int | None = None) -> int:
    """The scheduled purge: sent rows past ``RETENTION_DAYS``, failed ones past
    ``FAILED_RETENTION_DAYS`` (by when they failed), in every outbox database."""
    failed_days = conf.FAILED_RETENTION_DAYS
    total = 0
    for alias in [using] if using else outbox_aliases():
        total += purge(
            timedelta(days=conf.RETENTION_DAYS),
            include_failed=failed_days is not None,
            failed_older_than=timedelta(days=failed_days or 0),
            batch_size=batch_size,
            using=alias,
        )
    return total
