"""Figures about the outbox, for the admin summary and ``supalytics_status``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Min
from django.db.models.functions import TruncHour
from django.utils import timezone

from .models import OutboxEvent

Status = OutboxEvent.Status


@dataclass(frozen=True)
class Summary:
    counts: dict[str, int]
    oldest_pending_age: float | None  # seconds
    delivered_last_hour: int
    failed_last_hour: int
    last_error: str
    last_error_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_error_at"] = self.last_error_at.isoformat() if self.last_error_at else None
        return data


def summary(now: datetime | None = None) -> Summary:
    now = now or timezone.now()
    counts = dict.fromkeys(Status.values, 0)
    for row in OutboxEvent.objects.values("status").annotate(n=Count("id")).order_by():
        counts[row["status"]] = row["n"]
    oldest = OutboxEvent.objects.filter(status=Status.PENDING).aggregate(m=Min("created_at"))["m"]
    hour_ago = now - timedelta(hours=1)
    errored = (
        OutboxEvent.objects.exclude(last_error="")
        .exclude(status=Status.SENT)
        .order_by("-next_attempt_at")
        .values("last_error", "next_attempt_at")
        .first()
    )
    return Summary(
        counts=counts,
        oldest_pending_age=(now - oldest).total_seconds() if oldest else None,
        delivered_last_hour=OutboxEvent.objects.filter(
            status=Status.SENT, sent_at__gte=hour_ago
        ).count(),
        failed_last_hour=OutboxEvent.objects.filter(
            status=Status.FAILED, failed_at__gte=hour_ago
        ).count(),
        last_error=errored["last_error"] if errored else "",
        last_error_at=errored["next_attempt_at"] if errored else None,
    )


def hourly(hours: int = 24, now: datetime | None = None) -> list[tuple[datetime, int, int]]:
    """``(hour, delivered, failed)`` for each of the last ``hours`` hours, oldest first."""
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    buckets = {start + timedelta(hours=i): [0, 0] for i in range(hours)}
    for index, (status, field) in enumerate(
        ((Status.SENT, "sent_at"), (Status.FAILED, "failed_at"))
    ):
        rows = (
            OutboxEvent.objects.filter(status=status, **{f"{field}__gte": start})
            .annotate(hour=TruncHour(field))
            .values("hour")
            .annotate(n=Count("id"))
            .order_by()
        )
        for row in rows:
            if row["hour"] in buckets:
                buckets[row["hour"]][index] = row["n"]
    return [(hour, d, f) for hour, (d, f) in sorted(buckets.items())]
