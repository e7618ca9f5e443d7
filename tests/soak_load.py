"""The load of the fault soak, run as its own process (``python -m tests.soak_load``).

Tracks events in transactions at a steady rate, rolling every seventh transaction back; runs
the sweeper every two seconds (as beat would) until the stop file appears; writes the UUIDs it
committed and rolled back to a JSON file.
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
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stop-file", type=Path, required=True)
    args = parser.parse_args()
    committed: list[str] = []
    rolled_back: list[str] = []
    started = time.monotonic()
    next_sweep = started + 2
    made = 0
    txn = 0
    while made < args.events:
        txn += 1
        batch: list[str] = []
        try:
            with transaction.atomic():
                for _ in range(args.per_transaction):
                    batch.append(str(track("soak_event", metadata={"n": made}).uuid))
                    made += 1
                if txn % 7 == 0:
                    raise Rollback
        except Rollback:
            rolled_back.extend(batch)
        else:
            committed.extend(batch)
        time.sleep(max(0.0, started + made / args.rate - time.monotonic()))
        if time.monotonic() >= next_sweep:
            sweep_outbox()
            next_sweep += 2
    args.out.write_text(json.dumps({"committed": committed, "rolled_back": rolled_back}))
    publisher.flush(10)
    while not args.stop_file.exists():
        sweep_outbox()
        time.sleep(2)


if __name__ == "__main__":
    main()
