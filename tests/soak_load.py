"""The load of the fault soak, run as its own process (``python -m tests.soak_load``).

Tracks events in transactions at a steady rate, rolling every seventh transaction back; runs
the sweeper every two seconds (as beat would) until the stop file appears; writes the UUIDs it
committed and rolled back to a JSON file, with the Unix time each committed one was committed
at. ``--rollback-every 0`` rolls nothing back; ``--sweep-every 0`` never sweeps.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from django.db import transaction  # noqa: E402

from django_supalytics import track  # noqa: E402
from django_supalytics.dispatch import publisher  # noqa: E402
from django_supalytics.tasks import sweep_outbox  # noqa: E402


class Rollback(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--per-transaction", type=int, default=5)
    parser.add_argument("--rollback-every", type=int, default=7)
    parser.add_argument("--sweep-every", type=float, default=2.0)
    parser.add_argument("--name", default="soak_event")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stop-file", type=Path, required=True)
    args = parser.parse_args()
    committed: list[str] = []
    committed_at: dict[str, float] = {}
    rolled_back: list[str] = []
    started = time.monotonic()
    sweeps = args.sweep_every > 0
    next_sweep = started + args.sweep_every
    made = 0
    txn = 0
    while made < args.events:
        txn += 1
        batch: list[str] = []
        try:
            with transaction.atomic():
                for _ in range(args.per_transaction):
                    batch.append(str(track(args.name, metadata={"n": made}).uuid))
                    made += 1
                if args.rollback_every and txn % args.rollback_every == 0:
                    raise Rollback
        except Rollback:
            rolled_back.extend(batch)
        else:
            committed.extend(batch)
            now = time.time()
            committed_at.update((key, now) for key in batch)
        time.sleep(max(0.0, started + made / args.rate - time.monotonic()))
        if sweeps and time.monotonic() >= next_sweep:
            sweep_outbox()
            next_sweep += args.sweep_every
    args.out.write_text(
        json.dumps(
            {"committed": committed, "rolled_back": rolled_back, "committed_at": committed_at}
        )
    )
    publisher.flush(10)
    while not args.stop_file.exists():
        if sweeps and time.monotonic() >= next_sweep:
            sweep_outbox()
            next_sweep = time.monotonic() + args.sweep_every
        time.sleep(0.2)


if __name__ == "__main__":
    main()
