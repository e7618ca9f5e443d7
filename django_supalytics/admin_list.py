"""The outbox's list in the admin: its filters, its row count, and how its cells read."""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, QueryDict
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from . import bulk, stats
from .models import OutboxEvent, outbox_aliases

Status = OutboxEvent.Status
Priority = OutboxEvent.Priority

#: A status's icon beside its name: the badge reads without its colour too.
ICONS: dict[str, str] = {
    Status.PENDING: "\u25cb",  # ○
    Status.SENDING: "\u21bb",  # ↻
    Status.SENT: "\u2713",  # ✓
    Status.FAILED: "\u2715",  # ✕
    Status.EXPIRED: "\u2298",  # ⊘
}


class StatusCodeFilter(admin.SimpleListFilter):
    """Fixed choices: listing the codes present would scan the whole table."""

    title = "last status code"
    parameter_name = "code"
    CHOICES = {
        "2xx": Q(last_status_code__gte=200, last_status_code__lt=300),
        "429": Q(last_status_code=429),
        "4xx": Q(last_status_code__gte=400, last_status_code__lt=500) & ~Q(last_status_code=429),
        "5xx": Q(last_status_code__gte=500),
        "none": Q(last_status_code__isnull=True),
    }

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        labels = {"429": "429 (rate limited)", "none": "no answer"}
        return [(key, labels.get(key, key)) for key in self.CHOICES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(self.CHOICES[value]) if value in self.CHOICES else queryset


class LaneFilter(admin.SimpleListFilter):
    """Live rows (``track()``) or bulk ones (backfills, imports)."""

    title = "lane"
    parameter_name = "lane"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(lane.label.lower(), lane.label) for lane in Priority]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        lanes = {lane.label.lower(): lane.value for lane in Priority}
        value = self.value()
        return queryset.filter(priority=lanes[value]) if value in lanes else queryset


class DatabaseFilter(admin.SimpleListFilter):
    """The outbox's database, shown when there are several (``OUTBOX_DATABASES``): the page,
    its figures and its actions are that database's (``OutboxEventAdmin.get_queryset``)."""

    title = "outbox database"
    parameter_name = "database"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        aliases = outbox_aliases()
        return [(alias, alias) for alias in aliases[1:]] if len(aliases) > 1 else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset  # chosen in get_queryset, for the change page and the actions too


def outbox_database(request: HttpRequest) -> str:
    """The outbox database a request of the admin is about: its ``database`` parameter (kept
    through the change page in ``_changelist_filters``), else the router's."""
    aliases = outbox_aliases()
    kept = QueryDict(request.GET.get("_changelist_filters", ""))
    wanted = request.GET.get("database") or kept.get("database")
    return wanted if wanted in aliases else aliases[0]


class EstimatedCountPaginator(Paginator):  # type: ignore[type-arg]
    """The unfiltered list of a large outbox is counted from the planner's estimate: an exact
    COUNT(*) reads every retained row."""

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if query is not None and not query.where:
            estimate = stats.estimated_rows(getattr(self.object_list, "db", None))
            if estimate is not None:
                return estimate
        return super().count


def badge(status: str) -> SafeString:
    """A status as a coloured pill with an icon and its name (admin.css)."""
    label = Status(status).label if status in Status.values else status
    return format_html(
        '<span class="supalytics-badge supalytics-badge--{}"><span aria-hidden="true">{}</span> '
        "{}</span>",
        status,
        ICONS.get(status, "?"),
        label,
    )


def breakable(name: str) -> SafeString:
    """An event name that may wrap after its underscores (``subscription_<wbr>renewed``)."""
    return format_html_join(mark_safe("_<wbr>"), "{}", ((part,) for part in name.split("_")))


def span(seconds: float) -> str:
    """A length of time in its largest unit: "12 s", "3 min", "2 h", "4 d"."""
    seconds = max(int(seconds), 0)
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def ago(when: datetime, now: datetime | None = None) -> SafeString:
    """How long ago, to the second for recent times ("12 s", "3 min", "2 h"); a date after a
    day. The exact time is its title."""
    now = now or timezone.now()
    seconds = (now - when).total_seconds()
    if seconds < 86_400:
        text = span(seconds)
    else:
        text = date_format(local(when), "M j" if local(when).year == local(now).year else "Y-m-d")
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', when.isoformat(), exact(when), text
    )


def until(when: datetime, now: datetime | None = None) -> SafeString:
    """When a due time comes: "now" once due, else "in 12 s", "in 3 min"."""
    seconds = (when - (now or timezone.now())).total_seconds()
    text = "now" if seconds < 1 else f"in {span(seconds)}"
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', when.isoformat(), exact(when), text
    )


def exact(when: datetime) -> str:
    """A time to the second, in the current time zone, with the zone's name."""
    return date_format(local(when), "Y-m-d H:i:s T")


def local(when: datetime) -> datetime:
    """``when`` in the current time zone (as it is where ``USE_TZ`` is off)."""
    return timezone.localtime(when) if timezone.is_aware(when) else when


def retry_hint(row: OutboxEvent) -> SafeString | str:
    """Whether retrying a failed row can help, or the setting to fix first (a 401 stays a 401
    until ``API_KEY`` is fixed)."""
    helps = bulk.retry_helps(row)
    if helps is None:
        return ""
    if helps:
        return format_html(
            '<span class="supalytics-hint supalytics-hint--yes">{}</span>', "retry helps"
        )
    setting = bulk.setting_to_fix(row.last_status_code)
    if not setting:
        return format_html('<span class="supalytics-hint supalytics-hint--fix">{}</span>', "no")
    return format_html(
        '<span class="supalytics-hint supalytics-hint--fix" title="{}">'
        '<span class="supalytics-nowrap">fix {}</span> first</span>',
        f'A retry gets the same answer until SUPALYTICS["{setting}"] is fixed.',
        setting,
    )
