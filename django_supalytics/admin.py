"""The outbox in the admin: what was tracked, what happened to it, and retry / discard."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince

from . import stats
from .chart import hourly_svg
from .dispatch import publish
from .models import OutboxEvent, VisitorIdentity, db_now, outbox_alias

if TYPE_CHECKING:
    _OutboxEventAdmin = admin.ModelAdmin[OutboxEvent]
    _VisitorIdentityAdmin = admin.ModelAdmin[VisitorIdentity]
else:
    _OutboxEventAdmin = admin.ModelAdmin
    _VisitorIdentityAdmin = admin.ModelAdmin

Status = OutboxEvent.Status


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


@admin.register(OutboxEvent)
class OutboxEventAdmin(_OutboxEventAdmin):
    list_display = [
        "name",
        "visitor_id",
        "status",
        "attempts",
        "last_status_code",
        "age",
        "next_attempt_at",
    ]
    # No filter by name: listing the names present would read every row. Search instead.
    list_filter = ["status", StatusCodeFilter, "created_at"]
    search_fields = ["uuid", "name", "visitor_id"]
    search_help_text = "An event's UUID, or an exact event name or visitor ID."
    paginator = EstimatedCountPaginator
    # No date_hierarchy: its links are found by a DISTINCT over every row of the period.
    actions = ["retry_now", "discard"]
    list_select_related = False
    show_full_result_count = False
    fields = (
        "uuid",
        "name",
        "visitor_id",
        "user",
        "status",
        "payload_json",
        "attempts",
        "last_status_code",
        "last_error",
        "created_at",
        "next_attempt_at",
        "lease_expires_at",
        "sent_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

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
        return super().get_queryset(request).using(outbox_alias())

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

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> Any:
        figures = stats.summary()
        oldest = (
            timezone.now() - timedelta(seconds=figures.oldest_pending_age)
            if figures.oldest_pending_age is not None
            else None
        )
        context = {
            "supalytics_summary": figures,
            "supalytics_oldest": oldest,
            "supalytics_chart": hourly_svg(stats.hourly(24)),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    @admin.display(description="age", ordering="created_at")
    def age(self, obj: OutboxEvent) -> str:
        return timesince(obj.created_at, timezone.now())

    @admin.display(description="payload as sent")
    def payload_json(self, obj: OutboxEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, sort_keys=True))

    @admin.action(description="Retry now", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        alias = outbox_alias()
        retryable = Q(status=Status.FAILED) | Q(status=Status.PENDING)
        with transaction.atomic(using=alias):
            # Lock the rows (where the backend can), and re-check the status in the UPDATE
            # itself: a row a worker claimed or sent since the page was shown stays as it is.
            pks = list(
                queryset.using(alias)
                .filter(retryable)
                .select_for_update()
                .order_by()
                .values_list("pk", flat=True)
            )
            changed = (
                OutboxEvent.objects.using(alias)
                .filter(retryable, pk__in=pks)
                .update(status=Status.PENDING, next_attempt_at=db_now(), attempts=0, failed_at=None)
            )
            transaction.on_commit(partial(publish, pks, using=alias), using=alias)
        self.message_user(request, f"{changed} event(s) queued for delivery now.", messages.SUCCESS)

    @admin.action(description="Discard", permissions=["delete"])
    def discard(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        alias = outbox_alias()
        # One DELETE that carries the condition: a row claimed since the page was shown
        # (``sending``) is not deleted from under its worker.
        pks = list(queryset.order_by().values_list("pk", flat=True))
        count = (
            OutboxEvent.objects.using(alias)
            .filter(pk__in=pks)
            .exclude(status=Status.SENDING)
            ._raw_delete(alias)
        )
        self.message_user(request, f"{count} event(s) discarded.", messages.SUCCESS)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")


@admin.register(VisitorIdentity)
class VisitorIdentityAdmin(_VisitorIdentityAdmin):
    list_display = ["user", "visitor_id", "first_seen", "last_seen"]
    raw_id_fields = ["user"]
    readonly_fields = ["first_seen", "last_seen"]

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        from django.contrib.auth import get_user_model

        return ["visitor_id", *user_search_fields(get_user_model())]


def user_search_fields(user_model: Any) -> list[str]:
    """``user__<field>`` lookups for the user model's name and email fields, where it has them
    (a custom user model may have neither ``username`` nor ``email``)."""
    names = {field.name for field in user_model._meta.get_fields()}
    wanted = (getattr(user_model, "USERNAME_FIELD", None), getattr(user_model, "EMAIL_FIELD", None))
    return [f"user__{name}" for name in dict.fromkeys(wanted) if name and name in names]
