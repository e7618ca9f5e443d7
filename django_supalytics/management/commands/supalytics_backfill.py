from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist
from django.core.management.base import BaseCommand, CommandParser
from django.db import models, transaction

from ...checks import sensitive_field
from ...dispatch import publish
from ...exceptions import InvalidEvent
from ...models import BackfillRecord, OutboxEvent, outbox_alias
from ...tracking import build_event, withhold
from ._common import Progress, usage_error

#: Namespace of backfilled events' UUIDs: the same row and event name give the same UUID, so the
#: API sees the same Idempotency-Key. A re-run skips rows with a ``BackfillRecord`` of that UUID,
#: kept after the event itself is purged (the API may ignore idempotency keys).
BACKFILL_NAMESPACE = uuid.UUID("6f0c8a4e-5d1b-4b7e-9a55-2f6b1f0f5e11")


def backfill_uuid(label: str, pk: Any, event: str) -> uuid.UUID:
    return uuid.uuid5(BACKFILL_NAMESPACE, f"{label}:{pk}:{event}")


def _scalar(value: Any) -> Any:
    if isinstance(value, str | bool | int | float):
        return value
    return str(value)  # Decimal, date, UUID ... as text


class Command(BaseCommand):
    help = (
        "Track one event for each existing row of a model (e.g. existing subscriptions). "
        "Resumable: a re-run skips rows already backfilled for that event."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", help="APP_LABEL.MODEL, e.g. shop.Subscription")
        parser.add_argument("--event", required=True, help="event name to track for each row")
        parser.add_argument(
            "--metadata-from",
            nargs="*",
            default=[],
            metavar="FIELD",
            help="fields of the row to send as metadata (at most 10)",
        )
        parser.add_argument(
            "--user-from",
            metavar="FIELD",
            help="a foreign key to the user, whose visitor ID is used",
        )
        parser.add_argument(
            "--visitor-id-from", metavar="FIELD", help="a field holding the visitor ID"
        )
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument(
            "--dry-run", action="store_true", help="count and validate; write nothing"
        )

    def handle(
        self,
        *args: Any,
        model: str,
        event: str,
        metadata_from: list[str],
        user_from: str | None,
        visitor_id_from: str | None,
        batch_size: int,
        dry_run: bool,
        **options: Any,
    ) -> None:
        try:
            model_class = apps.get_model(model)
        except (LookupError, ValueError) as exc:
            raise usage_error(f"no model {model!r}: use APP_LABEL.MODEL") from exc
        fields = [*metadata_from, *filter(None, [user_from, visitor_id_from])]
        for name in fields:
            try:
                model_class._meta.get_field(name)
            except FieldDoesNotExist as exc:
                raise usage_error(f"{model_class._meta.label} has no field {name!r}") from exc
        for name in [*metadata_from, *filter(None, [visitor_id_from])]:
            self._check_value_field(model_class, name)
        if user_from:
            self._check_user_field(model_class, user_from)
        if batch_size < 1:
            raise usage_error("--batch-size must be at least 1")
        try:
            build_event(event, metadata=dict.fromkeys(metadata_from, 0))
        except InvalidEvent as exc:
            raise usage_error(f"invalid event: {exc}") from exc
        rows = model_class._default_manager.order_by("pk")
        if user_from:
            rows = rows.select_related(user_from)
        progress = Progress(rows.count(), self.stdout, "Backfilling")
        created = skipped = withheld = 0
        last_pk = None
        while True:
            # "is not None": a batch may end at pk 0 (or "" for a text key).
            page = rows if last_pk is None else rows.filter(pk__gt=last_pk)
            batch = list(page[:batch_size])
            if not batch:
                break
            last_pk = batch[-1].pk
            new, old, dropped = self._batch(
                model_class, batch, event, metadata_from, user_from, visitor_id_from, dry_run
            )
            created, skipped, withheld = created + new, skipped + old, withheld + dropped
            progress.advance(len(batch))
        progress.finish()
        verb = "Would track" if dry_run else "Tracked"
        line = f"{verb} {created} {event} events; {skipped} rows already done"
        suppressed = f"; {withheld} left out (suppressed visitors)" if withheld else ""
        self.stdout.write(f"{line}{suppressed}.")

    def _check_value_field(self, model_class: type[models.Model], name: str) -> None:
        """Only plain columns that hold no secret or account data are sent (an allow-list:
        concrete, not a relation, not sensitive by name)."""
        field = model_class._meta.get_field(name)
        label = f"{model_class._meta.label}.{name}"
        if field.is_relation or not getattr(field, "concrete", False):
            raise usage_error(f"{label} is a relation, not a value; it cannot be sent")
        if isinstance(field, models.BinaryField | models.JSONField | models.FileField):
            raise usage_error(f"{label} does not hold a text, number or boolean")
        if sensitive_field(model_class, name) or (
            model_class is get_user_model() and name in ("username", "email", "password")
        ):
            raise usage_error(f"{label} may hold a secret or account data; it is never sent")

    def _check_user_field(self, model_class: type[models.Model], name: str) -> None:
        field = model_class._meta.get_field(name)
        if not (field.many_to_one or field.one_to_one) or field.related_model is not (
            get_user_model()
        ):
            raise usage_error(
                f"--user-from {name!r} must be a foreign key to {get_user_model()._meta.label}"
            )

    def _batch(
        self,
        model_class: type[models.Model],
        batch: list[models.Model],
        name: str,
        metadata_from: list[str],
        user_from: str | None,
        visitor_id_from: str | None,
        dry_run: bool,
    ) -> tuple[int, int, int]:
        label = model_class._meta.label_lower
        alias = outbox_alias()
        wanted = {backfill_uuid(label, row.pk, name): row for row in batch}
        done = set(
            BackfillRecord.objects.using(alias).filter(key__in=wanted).values_list("key", flat=True)
        )
        # Events backfilled before BackfillRecord existed count as done too.
        done.update(
            OutboxEvent.objects.using(alias).filter(uuid__in=wanted).values_list("uuid", flat=True)
        )
        events = []
        for key, row in wanted.items():
            if key in done:
                continue
            try:
                event = build_event(
                    name,
                    visitor_id=(getattr(row, visitor_id_from) or None) if visitor_id_from else None,
                    user=getattr(row, user_from) if user_from else None,
                    metadata={
                        f: _scalar(value)
                        for f in metadata_from
                        if (value := getattr(row, f)) is not None
                    },
                )
            except InvalidEvent as exc:
                raise usage_error(f"{label} {row.pk}: {exc}") from exc
            event.uuid = key
            event.priority = OutboxEvent.Priority.BULK  # live events go first
            events.append(event)
        # A suppressed visitor's events, as track() treats them: anonymized, or left out (and
        # not recorded as done: a re-run after unsuppress_visitor() tracks them).
        built, events = len(events), withhold(events)
        counts = len(events), len(done), built - len(events)
        if dry_run or not events:
            return counts
        with transaction.atomic(using=alias):
            # The record commits with the event, or neither does.
            BackfillRecord.objects.using(alias).bulk_create(
                [BackfillRecord(key=event.uuid) for event in events], ignore_conflicts=True
            )
            OutboxEvent.objects.using(alias).bulk_create(events, ignore_conflicts=True)
            pks = (
                OutboxEvent.objects.using(alias)
                .filter(uuid__in=[e.uuid for e in events])
                .values_list("pk", flat=True)
            )
            # One message per BATCH_SIZE rows, the way every committed row is handed over.
            transaction.on_commit(partial(publish, list(pks), using=alias), using=alias)
        return counts
