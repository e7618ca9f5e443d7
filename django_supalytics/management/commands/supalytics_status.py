from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ...stats import summary
from ._common import add_database_argument


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


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
        figures = summary(using=database)
        if as_json:
            self.stdout.write(_dumps(figures.as_json()))
            return
        for status, count in figures.counts.items():
            about = "~" if status == "sent" and figures.sent_estimated else ""
            self.stdout.write(f"{status:<10}{about + str(count):>8}")
        self.stdout.write(f"oldest pending      {_age(figures.oldest_pending_age)}")
        self.stdout.write(f"delivered last hour {figures.delivered_last_hour}")
        self.stdout.write(f"failed last hour    {figures.failed_last_hour}")
        self.stdout.write(f"stuck sending       {figures.stuck_sending}")
        if figures.last_error:
            self.stdout.write(f"last error          {figures.last_error}")


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True)
