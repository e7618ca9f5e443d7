"""The outbox in the admin: what was tracked, what happened to it, and retry / discard."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from . import admin_views, bulk, health, stats
from .admin_list import (
    DatabaseFilter,
    EstimatedCountPaginator,
    LaneFilter,
    StatusCodeFilter,
    ago,
    badge,
    breakable,
    outbox_database,
    retry_hint,
    span,
    until,
)
from .chart import hourly_svg
from .models import OutboxEvent, SuppressedVisitor, VisitorIdentity

if TYPE_CHECKING:
    _OutboxEventAdmin = admin.ModelAdmin[OutboxEvent]
    _VisitorIdentityAdmin = admin.ModelAdmin[VisitorIdentity]
    _SuppressedVisitorAdmin = admin.ModelAdmin[SuppressedVisitor]
else:
    _OutboxEventAdmin = admin.ModelAdmin
    _VisitorIdentityAdmin = admin.ModelAdmin
    _SuppressedVisitorAdmin = admin.ModelAdmin

Status = OutboxEvent.Status


@admin.register(OutboxEvent)
class OutboxEventAdmin(_OutboxEventAdmin):
    # Fits 1,280 px beside the navigation and the filters: the visitor ID, the UUID and the
    # rest are on the event's page.
    list_display = [
        "event_name",
        "status_badge",
        "lane",
        "tries",
        "last_code",
        "age",
        "next_step",
    ]
    # Sorting by another column would read every row of a large outbox.
    sortable_by = ["event_name", "age"]
    # No filter by name: listing the names present would read every row. Search instead.
    list_filter = ["status", LaneFilter, StatusCodeFilter, "created_at", DatabaseFilter]
    search_fields = ["uuid", "name", "visitor_id"]
    search_help_text = (
        "An event's UUID (its Idempotency-Key), or an exact event name or visitor ID."
    )
    paginator = EstimatedCountPaginator
    # No date_hierarchy: its links are found by a DISTINCT over every row of the period.
    actions = ["retry_now", "discard"]
    list_select_related = False
    show_full_result_count = False

    class Media:
        css = {"all": ["django_supalytics/admin.css"]}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Nothing on a row is edited by hand, and saving its page would write every column
        # over a worker's update: the page is read-only (view), with Retry now and Discard as
        # its buttons. The list keeps the change permission (the retry action needs it).
        return obj is None and super().has_change_permission(request)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Discard, not Django's "delete selected": it would delete rows a worker holds.
        # ``action_location`` is Django 6.1's (the change form's actions); earlier ones call
        # this with the request alone.
        if action_location is None:
            actions = super().get_actions(request)
        else:
            actions = super().get_actions(request, action_location=action_location)  # type: ignore[call-arg, unused-ignore]
        actions.pop("delete_selected", None)
        return actions

    def get_queryset(self, request: HttpRequest) -> QuerySet[OutboxEvent]:
        return super().get_queryset(request).using(outbox_database(request))

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[OutboxEvent], search_term: str
    ) -> tuple[QuerySet[OutboxEvent], bool]:
        # Exact matches only, each served by an index (a substring search reads every row).
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(uuid=uuid.UUID(term)), False
        except ValueError:
            return queryset.filter(Q(name=term) | Q(visitor_id=term)), False

    def get_urls(self) -> list[URLPattern]:
        info = f"{self.opts.app_label}_{self.opts.model_name}"

        def view(function: Any, post_only: bool = False) -> Any:
            def bound(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                return function(self, request, *args, **kwargs)  # type: ignore[no-any-return]

            return self.admin_site.admin_view(require_POST(bound) if post_only else bound)

        # Before Django's own: its "<path:object_id>/" would take "12/retry/".
        return [
            path(
                "retry-failed-since/",
                view(admin_views.retry_since_view),
                name=f"{info}_retry_since",
            ),
            path(
                "<path:object_id>/retry/",
                view(admin_views.retry_view, post_only=True),
                name=f"{info}_retry",
            ),
            path(
                "<path:object_id>/discard/",
                view(admin_views.discard_view, post_only=True),
                name=f"{info}_discard",
            ),
            *super().get_urls(),
        ]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[()]:
        return ()  # the event's page is laid out by its template (change_form.html)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: OutboxEvent | None = None,
    ) -> HttpResponse:
        context["show_delete"] = False  # Discard instead: never a row a worker holds
        if obj is not None:
            context["supalytics_event"] = admin_views.event_context(self, request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        alias = outbox_database(request)
        figures = stats.summary(using=alias)
        age = figures.oldest_pending_age
        context = {
            "supalytics_summary": figures,
            "supalytics_oldest": span(age) if age is not None else None,
            "supalytics_lanes": [
                {"name": name, "due": lane.due, "eta": health.duration(lane.eta_seconds)}
                for name, lane in health.health(using=alias).lanes.items()
            ],
            "supalytics_chart": hourly_svg(stats.hourly(24, using=alias)),
            "supalytics_retry_since_url": (
                admin_views.page_url(self, request, "retry_since")
                if self.has_retry_permission(request)
                else ""
            ),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    @admin.display(description="name", ordering="name")
    def event_name(self, obj: OutboxEvent) -> SafeString:
        return breakable(obj.name)

    @admin.display(description="status")
    def status_badge(self, obj: OutboxEvent) -> SafeString:
        return badge(obj.status)

    @admin.display(description="lane")
    def lane(self, obj: OutboxEvent) -> str:
        return "bulk" if obj.priority == OutboxEvent.Priority.BULK else "live"

    @admin.display(description="tries")
    def tries(self, obj: OutboxEvent) -> int:
        return obj.attempts

    @admin.display(description="code")
    def last_code(self, obj: OutboxEvent) -> int | None:
        return obj.last_status_code  # None: no answer yet (shown as "-")

    @admin.display(description="age", ordering="created_at")
    def age(self, obj: OutboxEvent) -> SafeString:
        return ago(obj.created_at)

    @admin.display(description="next", empty_value="")
    def next_step(self, obj: OutboxEvent) -> SafeString | str:
        # A pending row's next attempt; for a failed one, whether a retry can help (or the
        # setting to fix first). Nothing comes next for the others.
        if obj.status == Status.PENDING:
            return until(obj.next_attempt_at)
        return retry_hint(obj) if obj.status == Status.FAILED else ""

    @admin.action(description="Retry now", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        # In batches, each UPDATE re-checking the status: a row a worker claimed or sent since
        # the page was shown stays as it is; "select all" never loads every primary key.
        changed = bulk.retry(queryset, user=request.user)
        self.message_user(request, f"{changed} event(s) queued for delivery now.", messages.SUCCESS)

    @admin.action(description="Discard", permissions=["delete"])
    def discard(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        # Never a row a worker holds (``sending``): the DELETE carries the condition.
        count = bulk.discard(queryset, user=request.user)
        self.message_user(request, f"{count} event(s) discarded.", messages.SUCCESS)


@admin.register(VisitorIdentity)
class VisitorIdentityAdmin(_VisitorIdentityAdmin):
    list_display = ["user", "visitor_id", "first_seen", "last_seen"]
    raw_id_fields = ["user"]
    readonly_fields = ["first_seen", "last_seen"]

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        from django.contrib.auth import get_user_model

        return ["visitor_id", *user_search_fields(get_user_model())]


@admin.register(SuppressedVisitor)
class SuppressedVisitorAdmin(_SuppressedVisitorAdmin):
    """Read-only: ``suppress_visitor()`` and ``unsuppress_visitor()`` change it (a digest
    names no one, so it cannot be chosen here)."""

    list_display = ["digest", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def user_search_fields(user_model: Any) -> list[str]:
    """``user__<field>`` lookups for the user model's name and email fields, where it has them
    (a custom user model may have neither ``username`` nor ``email``)."""
    names = {field.name for field in user_model._meta.get_fields()}
    wanted = (getattr(user_model, "USERNAME_FIELD", None), getattr(user_model, "EMAIL_FIELD", None))
    return [f"user__{name}" for name in dict.fromkeys(wanted) if name and name in names]
