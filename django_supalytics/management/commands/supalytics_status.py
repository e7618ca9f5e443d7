from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ...health import Lane, duration, health
from ...models import outbox_aliases
from ...stats import Summary, summary
from ._common import add_database_argument, database_alias


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else duration(seconds)


class Command(BaseCommand):
    help = "Show the outbox at a glance: events by status, backlog age, recent deliveries."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="print JSON instead"
        )
        add_database_argument(parser)

    def handle(
        self, *args: Any, as_json: bool = False, database: str | None = None, **options: Any
    ) -> None:
        # Every outbox database unless told one; with several, each under its alias.
        aliases = [database_alias(database)] if database else outbox_aliases()
        figures = {alias: summary(using=alias) for alias in aliases}
        lanes = {alias: health(using=alias).lanes for alias in aliases}
        if as_json:
            data = {
                alias: {**f.as_json(), "lanes": {k: asdict(v) for k, v in lanes[alias].items()}}
                for alias, f in figures.items()
            }
            self.stdout.write(_dumps(data if len(aliases) > 1 else data[aliases[0]]))
            return
        for alias, these in figures.items():
            if len(aliases) > 1:
                self.stdout.write(f"database {alias!r}")
            self._show(these, lanes[alias])

    def _show(self, figures: Summary, lanes: dict[str, Lane]) -> None:
        for status, count in figures.counts.items():
            about = "~" if status == "sent" and figures.sent_estimated else ""
            self.stdout.write(f"{status:<10}{about + str(count):>8}")
        self.stdout.write(f"oldest pending      {_age(figures.oldest_pending_age)}")
        for name, lane in lanes.items():
            # The ETA at RATE_LIMIT: bulk rows wait for every due live row.
            self.stdout.write(
                f"due {name:<16}{lane.due} (oldest {_age(lane.oldest_due_seconds)}, "
                f"ETA {_age(lane.eta_seconds)})"
            )
        self.stdout.write(f"delivered last hour {figures.delivered_last_hour}")
        self.stdout.write(f"failed last hour    {figures.failed_last_hour}")
        self.stdout.write(f"stuck sending       {figures.stuck_sending}")
        if figures.last_error:
            self.stdout.write(f"last error          {figures.last_error}")
        if figures.setting_to_fix:
            self.stdout.write(
                f"setting to fix      SUPALYTICS[{figures.setting_to_fix!r}] "
                "(the pending rows' errors say it is wrong)"
            )


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True)
