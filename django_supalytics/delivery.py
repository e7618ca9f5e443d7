"""Delivering outbox rows: which rows a task, a drain or a command claims, and in what order,
for ``sender.send`` to send. Used by every task and command that delivers.

A task claims a few rows at a time (two per request thread): first its own, then, while the
drain lasts, whatever is due, live rows first (``OutboxEventQuerySet.claim``), so a live row
never waits behind a batch in hand. What became of each row comes back as a ``Result``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection

from django.db.models import DurationField, ExpressionWrapper, F

from .client import Kind
from .conf import conf
from .models import OutboxEvent, db_now, outbox_alias
from .queryset import retrying
from .sender import Result, send

__all__ = ["DRAIN_SECONDS", "Result", "deliver", "deliver_due", "deliver_many", "send"]

#: A task that finds more rows due once its own are in flight goes on with them for up to this
#: long (a backlog then goes without a gap between tasks); a worker's shutdown ends it sooner.
DRAIN_SECONDS = 10.0


def _claim(
    alias: str, limit: int, exclude: Collection[int] = (), ids: list[int] | None = None
) -> list[OutboxEvent]:
    """``OutboxEventQuerySet.claim`` through the database's retries, under one token for every
    try: a try after a COMMIT whose answer was lost finds the rows it leased then, which would
    otherwise be held by nobody until their lease ran out."""
    rows = OutboxEvent.objects.using(alias)
    token = uuid.uuid4()
    tries = 0

    def claim() -> list[OutboxEvent]:
        nonlocal tries
        tries += 1
        held = list(rows.held_by(token)) if tries > 1 else []
        return held or rows.claim(limit, ids=ids, exclude=exclude, token=token)

    return retrying(alias, claim)


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
    """Claim those of ``event_ids`` that are due and free, and send them.

    Rows not due yet (a message that arrived early) come back ``deferred`` with the time until
    they are due; rows already sent, or held by another worker, ``skipped``. With ``drain``, the
    rows are claimed a few at a time (twice ``SEND_CONCURRENCY``), with whatever else is due
    (live rows first) for up to ``DRAIN_SECONDS`` (or until the worker shuts down), so that a
    live row committed meanwhile waits for the next small claim, never behind a batch of bulk
    ones; then the rest of ``event_ids``. Results follow the order of the claims.
    """
    alias = using or outbox_alias()
    rows = OutboxEvent.objects.using(alias)
    step = 2 * max(1, conf.SEND_CONCURRENCY) if drain else len(event_ids)
    until = time.monotonic() + DRAIN_SECONDS if drain else 0.0
    own = list(dict.fromkeys(event_ids))
    seen: set[int] = set()

    def more(exclude: Collection[int]) -> list[OutboxEvent]:
        # Everything due, live first, while the drain lasts; then the rest of our own rows.
        claimed = _claim(alias, step, exclude) if time.monotonic() < until else []
        rest = [pk for pk in own if pk not in seen and pk not in exclude]
        if not claimed and rest:
            claimed = _claim(alias, step, exclude, ids=rest)
        seen.update(event.pk for event in claimed)
        return claimed

    first = _claim(alias, step, ids=own) if own else []
    seen.update(event.pk for event in first)
    results = send(first or more(()), more if drain or len(own) > step else None, sleep)
    missing = set(event_ids) - {result.event_id for result in results}
    if missing:
        until_due = ExpressionWrapper(F("next_attempt_at") - db_now(), output_field=DurationField())
        # Still pending: not due yet (a message that came early), or not reached (the worker is
        # shutting down): due again then, so that ``requeue`` hands them over again.
        pending = dict(
            rows.filter(pk__in=missing, status="pending")
            .annotate(wait=until_due)
            .values_list("pk", "wait")
        )
        for pk in sorted(missing):
            if pk in pending:
                wait = max(0.0, pending[pk].total_seconds())
                results.append(Result(pk, Kind.DEFERRED, wait))
            else:
                results.append(Result(pk, Kind.SKIPPED))
    return results


def deliver_due(
    limit: int,
    sleep: Callable[[float], None] = time.sleep,
    using: str | None = None,
    batch_size: int | None = None,
) -> list[Result]:
    """Claim and send up to ``limit`` due rows (and expired leases), longest due first,
    ``batch_size`` (default ``BATCH_SIZE``) per claim, each at most once per call."""
    alias = using or outbox_alias()
    size = batch_size or conf.BATCH_SIZE
    claimed = 0

    def more(exclude: Collection[int]) -> list[OutboxEvent]:
        nonlocal claimed
        rows = _claim(alias, min(size, limit - claimed), exclude) if claimed < limit else []
        claimed += len(rows)
        return rows

    return send(more(()), more, sleep)


def count_outcomes(results: list[Result]) -> dict[str, int]:
    """``{"sent": n, "retry": n, ...}``: what a task reports."""
    outcomes: dict[str, int] = {}
    for result in results:
        outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1
    return outcomes
