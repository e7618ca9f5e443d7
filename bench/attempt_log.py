"""Write-path cost of the attempt history (``OutboxEvent.attempt_log``), side by side.

    .venv/bin/python bench/attempt_log.py [--rounds N]

A sender records each answer with one UPDATE of the leased row. Timed, interleaved, on rows
already holding a full history (the worst case, 20 entries):

- ``record()`` of a failure (a 503): the UPDATE with the history appended;
- the same UPDATE without the history column (what recording a failure cost before it);
- ``record()`` of a success: its UPDATE never writes the history.

At the API's limit (100 answers a second for every worker together) the difference, times 100,
is what the history costs the database per second when every answer is a failure.
"""

from __future__ import annotations

import argparse
import uuid

from common import database_label, interleaved_medians, setup, throwaway_database

setup()

from django_supalytics.client import Kind, Outcome
from django_supalytics.models import ATTEMPT_LOG_MAX, OutboxEvent, db_now, log_entry

FAILURE = Outcome(Kind.RETRY, 503, "the service is unavailable", seconds=0.012)
SUCCESS = Outcome(Kind.SENT, 200, seconds=0.008)


def leased(count: int) -> list[OutboxEvent]:
    """``count`` rows under a lease, each with a full history."""
    history = [log_entry(FAILURE)] * ATTEMPT_LOG_MAX
    rows = OutboxEvent.objects.bulk_create(
        OutboxEvent(name="subscription_created", metadata={"plan": "pro"}, attempt_log=history)
        for _ in range(count)
    )
    return rows


def lease(row: OutboxEvent) -> OutboxEvent:
    row.lease_owner = uuid.uuid4()
    OutboxEvent.objects.filter(pk=row.pk).update(status="sending", lease_owner=row.lease_owner)
    row.attempts = 1
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with throwaway_database():
        print(f"database: {database_label()}")
        # interleaved_medians: 20 warm-up calls, then 50 per round, each on a row of its own.
        pool = {name: leased(20 + 50 * args.rounds) for name in ("log", "bare", "sent")}

        def with_history() -> None:
            lease(pool["log"].pop()).record(FAILURE)

        def without_history() -> None:
            row = lease(pool["bare"].pop())
            row._held().update(
                attempts=2,
                last_status_code=503,
                last_error=FAILURE.error,
                lease_owner=None,
                lease_expires_at=None,
                status="pending",
                next_attempt_at=db_now(1.0),
            )

        def success() -> None:
            lease(pool["sent"].pop()).record(SUCCESS)

        medians = interleaved_medians(
            {"history": with_history, "bare": without_history, "sent": success}, args.rounds
        )
        OutboxEvent.objects.all().delete()
    log, bare, sent = medians["history"], medians["bare"], medians["sent"]
    print(f"lease + record a failure, with history  {log * 1e6:8.0f} µs")
    print(f"lease + the same UPDATE without it      {bare * 1e6:8.0f} µs")
    print(f"  ratio                                 {log / bare:8.2f}×")
    print(f"lease + record a success (no history)   {sent * 1e6:8.0f} µs")
    print(f"at 100 failures/s: {100 * (log - bare) * 1e3:.1f} ms of database time per second")


if __name__ == "__main__":
    main()
