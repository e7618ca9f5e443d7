from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from ... import delivery
from ...backends import get_backend
from ...client import Kind
from ...exceptions import InvalidEvent
from ...tracking import build_event, track, withhold
from ._common import parse_metadata, usage_error


class Command(BaseCommand):
    help = (
        "Track one event, to check a set-up. By default it is handed to the DELIVERY_BACKEND "
        "like any other; with --now it is sent from this process and the answer is printed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="event name, e.g. setup_check")
        parser.add_argument("--visitor-id", help="visitor ID to attribute the event to")
        parser.add_argument(
            "--metadata",
            nargs="*",
            metavar="KEY=VALUE",
            help="metadata pairs; numbers and true/false are converted",
        )
        parser.add_argument(
            "--now", action="store_true", help="send synchronously and print the outcome"
        )

    def handle(
        self,
        *args: Any,
        name: str,
        visitor_id: str | None,
        metadata: list[str] | None,
        now: bool,
        **options: Any,
    ) -> None:
        try:
            if now:
                # Sent from here: the row is written without asking a worker to send it too.
                event = build_event(name, visitor_id=visitor_id, metadata=parse_metadata(metadata))
                if withhold([event]):
                    event.save(force_insert=True)
            else:
                with transaction.atomic():
                    event = track(name, visitor_id=visitor_id, metadata=parse_metadata(metadata))
        except InvalidEvent as exc:
            raise usage_error(f"invalid event: {exc}") from exc
        if event.pk is None:  # SUPPRESSION = "drop" for this visitor
            self.stdout.write(f"Not tracked: visitor {visitor_id!r} is suppressed.")
            return
        self.stdout.write(f"Tracked {event.name} as {event.uuid}:")
        self.stdout.write(json.dumps(event.payload, indent=2))
        if not now:
            self.stdout.write(f"Queued for {get_backend().delivered_by}.")
            return
        result = delivery.deliver(event.pk)
        event.refresh_from_db()
        line = f"Outcome: {result.outcome.value} (status {event.last_status_code})"
        if result.outcome is Kind.SENT:
            self.stdout.write(self.style.SUCCESS(line))
            return
        # Not sent now: the row stays in the outbox (the sweeper retries it unless it failed).
        raise CommandError(f"{line}: {event.last_error or 'not sent'}", returncode=1)
