"""How far delivery is behind, read from the outbox at request time: ``health/`` and ``metrics/``.

Every figure comes from the outbox tables (and the limiter's shared state), so it is right across
every worker process and machine. Every query reads a partial index of the live rows, a time
range of ``sent_at`` or ``failed_at``, or the planner's estimate: never the retained sent rows.
Ages are by the database's clock (``db_now``), like every due time.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, Max, Min

from .conf import conf
from .models import OutboxEvent, db_now, outbox_aliases
from .queryset import DbNow
from .stats import estimated_rows

logger = logging.getLogger("django_supalytics")
Status = OutboxEvent.Status
#: The lanes by name, in the order claims take them.
LANES = {"live": OutboxEvent.Priority.LIVE, "bulk": OutboxEvent.Priority.BULK}
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: ``(labels, value)``; a metric is ``(name, help, samples)``, every one a gauge.
Sample = tuple[dict[str, str], float]
Metric = tuple[str, str, list[Sample]]


@dataclass(frozen=True)
class Lane:
    due: int = 0  # pending rows due now
    oldest_due_seconds: float = 0.0  # how long the longest due of them has been due
    eta_seconds: float = 0.0  # how long the due rows take at RATE_LIMIT (bulk waits for live)


@dataclass(frozen=True)
class Health:
    lanes: dict[str, Lane]
    stuck_sending: int  # rows ``sending`` whose lease ran out
    oldest_stuck_seconds: float  # since the oldest of those leases ran out
    max_lag: float  # HEALTH_MAX_LAG

    @property
    def lag_seconds(self) -> float:
        """What health judges: the live lane's oldest due row, or an expired lease. The bulk
        lane legitimately waits behind live traffic and its own backlog, so it is not judged."""
        return max(self.lanes["live"].oldest_due_seconds, self.oldest_stuck_seconds)

    @property
    def behind(self) -> int:
        return self.lanes["live"].due + self.stuck_sending

    @property
    def ok(self) -> bool:
        return self.lag_seconds < self.max_lag

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "behind",
            "lag_seconds": round(self.lag_seconds, 3),
            "behind": self.behind,
            "max_lag_seconds": self.max_lag,
            "stuck_sending": self.stuck_sending,
            "oldest_stuck_seconds": round(self.oldest_stuck_seconds, 3),
            "lanes": {
                name: {key: round(value, 3) for key, value in asdict(lane).items()}
                for name, lane in self.lanes.items()
            },
        }


def _age(oldest: datetime | None, now: datetime | None) -> float:
    return max((now - oldest).total_seconds(), 0.0) if oldest and now else 0.0


def health(using: str | None = None) -> Health:
    """The figures of ``health/``: two index-only queries per outbox database (due rows by
    lane, on ``supalytics_due_idx``; expired leases, on ``supalytics_lease_idx``)."""
    due = dict.fromkeys(LANES, 0)
    oldest = dict.fromkeys(LANES, 0.0)
    stuck, stuck_age = 0, 0.0
    lane_of = {int(value): name for name, value in LANES.items()}
    for alias in [using] if using else outbox_aliases():
        rows = OutboxEvent.objects.using(alias)
        by_lane = (
            rows.due()
            .values("priority")
            .annotate(n=Count("*"), oldest=Min("next_attempt_at"), now=Max(DbNow()))
            .order_by()
        )
        for row in by_lane:
            name = lane_of.get(row["priority"], "bulk")
            due[name] += row["n"]
            oldest[name] = max(oldest[name], _age(row["oldest"], row["now"]))
        leases = rows.expired_leases().aggregate(
            n=Count("*"), oldest=Min("lease_expires_at"), now=Max(DbNow())
        )
        stuck += leases["n"]
        stuck_age = max(stuck_age, _age(leases["oldest"], leases["now"]))
    rate = conf.RATE_LIMIT
    ahead = 0  # rows claimed before this lane's: bulk waits for every due live row
    lanes = {}
    for name in LANES:
        ahead += due[name]
        lanes[name] = Lane(due[name], oldest[name], ahead / rate if rate > 0 else 0.0)
    return Health(lanes, stuck, stuck_age, conf.HEALTH_MAX_LAG)


def shared_state() -> tuple[float, float]:
    """``(seconds left of a 429 pause, 1.0 if the outage circuit is open else 0.0)``, from the
    limiter's cache; NaN both when it does not answer."""
    from .outage import open_for
    from .ratelimit import get_limiter

    key = conf.API_KEY
    if not key:
        return 0.0, 0.0
    try:
        return get_limiter(key).paused(), float(open_for(key) is not None)
    except Exception:  # the cache is down: the outbox figures are still worth serving
        logger.warning("supalytics metrics: the limiter's cache did not answer", exc_info=True)
        return math.nan, math.nan


def metrics(using: str | None = None) -> list[Metric]:
    """Every metric of ``metrics/`` and of the prometheus_client collector."""
    figures = health(using)
    counts = dict.fromkeys(Status.values, 0)
    delivered = failed = 0
    for alias in [using] if using else outbox_aliases():
        rows = OutboxEvent.objects.using(alias)
        exact = {s: rows.filter(status=s).count() for s in Status.values if s != Status.SENT}
        estimate = estimated_rows(alias)
        if estimate is None:
            exact[Status.SENT] = rows.filter(status=Status.SENT).count()
        else:
            exact[Status.SENT] = max(0, estimate - sum(exact.values()))
        for status, n in exact.items():
            counts[status] += n
        delivered += rows.filter(status=Status.SENT, sent_at__gte=db_now(-3600)).count()
        failed += rows.filter(status=Status.FAILED, failed_at__gte=db_now(-3600)).count()
    paused, outage = shared_state()

    def by_lane(field: str) -> list[Sample]:
        return [({"lane": name}, getattr(lane, field)) for name, lane in figures.lanes.items()]

    def one(value: float) -> list[Sample]:
        return [({}, value)]

    statuses: list[Sample] = [({"status": status}, n) for status, n in counts.items()]
    return [
        ("supalytics_outbox_events", "Outbox rows by status (sent: estimated if many).", statuses),
        ("supalytics_due_events", "Pending rows due now, by lane.", by_lane("due")),
        (
            "supalytics_oldest_due_seconds",
            "Seconds the lane's longest due pending row has been due (0: none).",
            by_lane("oldest_due_seconds"),
        ),
        (
            "supalytics_backlog_eta_seconds",
            "Seconds the lane's due rows take at the rate limit (bulk waits for live).",
            by_lane("eta_seconds"),
        ),
        (
            "supalytics_stuck_sending_events",
            "Rows left sending by a worker whose lease ran out.",
            one(figures.stuck_sending),
        ),
        (
            "supalytics_oldest_stuck_seconds",
            "Seconds since the oldest expired lease ran out (0: none).",
            one(figures.oldest_stuck_seconds),
        ),
        (
            "supalytics_rate_limit_paused_seconds",
            "Seconds left of the pause every worker keeps after a 429 (0: none).",
            one(paused),
        ),
        (
            "supalytics_outage_open",
            "1 while the outage circuit is open (the API failing for everyone), else 0.",
            one(outage),
        ),
        ("supalytics_delivered_last_hour", "Rows sent in the last hour.", one(delivered)),
        ("supalytics_failed_last_hour", "Rows failed in the last hour.", one(failed)),
        ("supalytics_rate_limit", "The configured RATE_LIMIT (requests/s).", one(conf.RATE_LIMIT)),
        (
            "supalytics_health_max_lag_seconds",
            "The configured HEALTH_MAX_LAG: health/ answers 503 beyond this lag.",
            one(figures.max_lag),
        ),
    ]


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(text: str, quote: bool = False) -> str:
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    return text.replace('"', r"\"") if quote else text


def exposition(families: list[Metric]) -> str:
    """The metrics in Prometheus' text exposition format 0.0.4 (``CONTENT_TYPE``)."""
    lines = []
    for name, help_text, samples in families:
        lines += [f"# HELP {name} {_escape(help_text)}", f"# TYPE {name} gauge"]
        for labels, value in samples:
            text = ",".join(f'{k}="{_escape(v, quote=True)}"' for k, v in labels.items())
            lines.append(f"{name}{'{' + text + '}' if text else ''} {_number(value)}")
    return "\n".join(lines) + "\n"


def duration(seconds: float) -> str:
    """``42s``, ``3.5m``, ``1.2h``, ``2.0d``: an age or an ETA at a glance."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
