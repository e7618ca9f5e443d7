from __future__ import annotations

import time
from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import delivery
from ...client import Kind
from ...conf import conf
from ...models import OutboxEvent, outbox_aliases
from ._common import Progress, add_database_argument, database_alias, usage_error

#: Longest single wait for the rate limiter before looking again.
WAIT_STEP = 5.0


class Command(BaseCommand):
    help = (
        "Deliver due events from this process, without Celery: for cron-only sites and "
        "emergencies. Longest due first, through the same shared rate limiter as the workers, "
        "so it can run beside them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--limit",
            type=int,
            default=None,
            help="deliver at most this many events (default: all that are due)",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="rows claimed per transaction (default: SUPALYTICS BATCH_SIZE)",
        )
        add_database_argument(parser)

    def handle(
        self,
        *args: Any,
        limit: int | None,
        batch_size: int | None,
        database: str | None,
        **options: Any,
    ) -> None:
        if limit is not None and limit < 1:
            raise usage_error("--limit must be at least 1")
        if batch_size is not None and batch_size < 1:
            raise usage_error("--batch-size must be at least 1")
        # Due rows and expired leases (a drain or worker killed mid-send left those), in
        # every outbox database unless told one.
        aliases = [database_alias(database)] if database else outbox_aliases()
        due = {alias: OutboxEvent.objects.using(alias).claimable().count() for alias in aliases}
        total = sum(due.values()) if limit is None else min(sum(due.values()), limit)
        if not total:
            self.stdout.write("Nothing is due.")
            return
        outcomes: Counter[str] = Counter()
        progress = Progress(total, self.stdout, "Delivering")
        done = 0
        size = batch_size or conf.BATCH_SIZE
        for alias in aliases:
            left = min(due[alias], total - done)
            while left > 0:
                results = delivery.deliver_due(min(size, left), using=alias, batch_size=size)
                if not results:
                    break
                sent = [r for r in results if r.outcome is not Kind.DEFERRED]
                for result in sent:
                    outcomes[result.outcome.value] += 1
                    progress.advance()
                done += len(sent)
                left -= len(sent)
                deferred = [r for r in results if r.outcome is Kind.DEFERRED]
                if deferred:
                    if deferred[-1].retry_in is None:
                        progress.finish()
                        raise CommandError(
                            "delivery is off (ENABLED is False), or the API key is missing or "
                            "invalid",
                            returncode=1,
                        )
                    time.sleep(min(WAIT_STEP, deferred[-1].retry_in))
        progress.finish()
        summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items()))
        self.stdout.write(f"Done: {summary or 'nothing delivered'}.")
