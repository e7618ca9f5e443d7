from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from ...conf import conf
from ...models import OutboxEvent, outbox_alias
from ._common import add_database_argument, database_alias, usage_error


class Command(BaseCommand):
    help = (
        "Delete sent events older than RETENTION_DAYS (or --older-than-days) from the outbox, "
        "in batches; with --include-failed, also failed events that failed longer than "
        "FAILED_RETENTION_DAYS (or --older-than-days) ago. Pending events are never deleted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than-days",
            type=float,
            default=None,
            help="age in days (default: SUPALYTICS['RETENTION_DAYS'])",
        )
        parser.add_argument(
            "--include-failed",
            action="store_true",
            help="also delete failed events, by when they failed",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be deleted; delete nothing"
        )
        add_database_argument(parser)

    def handle(
        self,
        *args: Any,
        older_than_days: float | None,
        include_failed: bool,
        dry_run: bool,
        database: str | None,
        **options: Any,
    ) -> None:
        days = conf.RETENTION_DAYS if older_than_days is None else older_than_days
        if not math.isfinite(days) or days < 0:
            raise usage_error(
                f"--older-than-days must be a finite number of days, 0 or more, not {days:g}"
            )
        try:
            age = timedelta(days=days)
            timezone.now() - age
        except OverflowError as exc:
            raise usage_error(f"--older-than-days {days:g} reaches before year 1") from exc
        failed_days = conf.FAILED_RETENTION_DAYS if older_than_days is None else older_than_days
        failed_age = None if failed_days is None else timedelta(days=failed_days)
        include_failed = include_failed and failed_age is not None
        rows = OutboxEvent.objects.using(
            database_alias(database) if database else outbox_alias()
        ).purgeable(age, failed_age if include_failed else None)
        if dry_run:
            count = rows.count()
            self.stdout.write(f"Would delete {count} events older than {days:g} days.")
            return
        deleted = rows.purge()
        self.stdout.write(f"Deleted {deleted} events older than {days:g} days.")
