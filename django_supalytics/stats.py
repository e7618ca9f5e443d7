"""Figures about the outbox, for the admin summary and ``supalytics_status``."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import Count, Min, Q
from django.db.models.functions import Coalesce, TruncHour
from django.utils import timezone

from .models import OutboxEvent, db_now, outbox_alias

Status = OutboxEvent.Status

#: How an error says a setting is wrong: "SUPALYTICS['ENDPOINT'] is wrong; ..." (a redirect),
#: "SUPALYTICS API_KEY contains a newline" (``client.api_key_problem``).
SETTING_WRONG_RE = re.compile(
    r"SUPALYTICS(?:\['([A-Z_]+)'\]| ([A-Z_]+)) (?:is wrong|is empty|contains|must)"
)

#: Below this many rows (by the planner's estimate) the outbox is counted exactly.
EXACT_COUNT_MAX = 100_000


def estimated_rows(using: str | None = None) -> int | None:
    """The planner's estimate of the outbox's row count, when the table is large enough for an
    exact count to hurt (``None``: count exactly). PostgreSQL and MySQL/MariaDB keep one."""
    connection = connections[using or outbox_alias()]
    table = OutboxEvent._meta.db_table
    if connection.vendor == "postgresql":
        sql = "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)"
    elif connection.vendor == "mysql":
        sql = (
            "SELECT table_rows FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = %s"
        )
    else:
        return None
    with connection.cursor() as cursor:
        cursor.execute(sql, [table])
        row = cursor.fetchone()
    estimate = int(row[0]) if row and row[0] is not None else -1
    return estimate if estimate > EXACT_COUNT_MAX else None


@dataclass(frozen=True)
class Summary:
    counts: dict[str, int]  # "sent" is an estimate when ``sent_estimated``
    oldest_pending_age: float | None  # seconds
    delivered_last_hour: int
    failed_last_hour: int
    last_error: str
    last_error_at: datetime | None
    sent_estimated: bool = False
    #: Rows ``sending`` whose lease ran out: their worker died, and no sweeper reclaimed them
    #: yet (unlike ``counts["sending"]``, which also counts rows being sent right now).
    stuck_sending: int = 0
    #: The ``SUPALYTICS`` key that waiting rows' errors say is wrong, or "".
    setting_to_fix: str = ""

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_error_at"] = self.last_error_at.isoformat() if self.last_error_at else None
        return data


def summary(now: datetime | None = None, using: str | None = None) -> Summary:
    """The figures of the admin and ``supalytics_status``.

    Every query reads the live rows (through the partial indexes) or a time range, never the
    whole table: on a large outbox the count of ``sent`` rows is the planner's estimate.
    """
    now = now or timezone.now()
    alias = using or outbox_alias()
    rows = OutboxEvent.objects.using(alias)
    counts = dict.fromkeys(Status.values, 0)
    for status in (Status.PENDING, Status.SENDING, Status.FAILED, Status.EXPIRED):
        counts[status] = rows.filter(status=status).count()
    estimate = estimated_rows(alias)
    if estimate is None:
        counts[Status.SENT] = rows.filter(status=Status.SENT).count()
    else:
        counts[Status.SENT] = max(0, estimate - sum(counts.values()))
    # The minimum of an expression, not of the column: PostgreSQL would answer MIN(created_at)
    # by walking the created_at index from the oldest row, through every retained sent one, to
    # the first pending row. This way it reads the pending rows through their partial index.
    oldest = rows.filter(status=Status.PENDING).aggregate(
        m=Min(Coalesce("created_at", "next_attempt_at"))
    )["m"]
    errored = (
        rows.filter(Q(status=Status.PENDING) | Q(status=Status.SENDING) | Q(status=Status.FAILED))
        .exclude(last_error="")
        .order_by("-next_attempt_at")
        .values("last_error", "next_attempt_at")
        .first()
    )
    hour_ago = db_now(-3600)
    return Summary(
        counts=counts,
        oldest_pending_age=(now - oldest).total_seconds() if oldest else None,
        delivered_last_hour=rows.filter(status=Status.SENT, sent_at__gte=hour_ago).count(),
        failed_last_hour=rows.filter(status=Status.FAILED, failed_at__gte=hour_ago).count(),
        last_error=errored["last_error"] if errored else "",
        last_error_at=errored["next_attempt_at"] if errored else None,
        sent_estimated=estimate is not None,
        stuck_sending=rows.expired_leases().count(),
        setting_to_fix=setting_to_fix(using=alias),
    )


def setting_to_fix(using: str | None = None) -> str:
    """The ``SUPALYTICS`` key to fix, or "": ``ENDPOINT`` when a pending row was answered with
    a redirect, else the key the newest pending row's last error says is wrong."""
    pending = OutboxEvent.objects.using(using or outbox_alias()).filter(status=Status.PENDING)
    if pending.filter(last_status_code__gte=300, last_status_code__lt=400).exists():
        return "ENDPOINT"
    newest = (
        pending.exclude(last_error="")
        .order_by("-next_attempt_at")
        .values_list("last_error", flat=True)
        .first()
    )
    match = SETTING_WRONG_RE.search(newest or "")
    return (match.group(1) or match.group(2)) if match else ""


def hourly(
    hours: int = 24, now: datetime | None = None, using: str | None = None
) -> list[tuple[datetime, int, int]]:
    """``(hour, delivered, failed)`` for each of the last ``hours`` hours, oldest first."""
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    buckets = {start + timedelta(hours=i): [0, 0] for i in range(hours)}
    for index, (status, field) in enumerate(
        ((Status.SENT, "sent_at"), (Status.FAILED, "failed_at"))
    ):
        rows = (
            OutboxEvent.objects.using(using or outbox_alias())
            .filter(status=status, **{f"{field}__gte": start})
            .annotate(hour=TruncHour(field))
            .values("hour")
            .annotate(n=Count("id"))
            .order_by()
        )
        for row in rows:
            if row["hour"] in buckets:
                buckets[row["hour"]][index] = row["n"]
    return [(hour, d, f) for hour, (d, f) in sorted(buckets.items())]
