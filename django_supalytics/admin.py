"""The outbox in the admin: what was tracked, what happened to it, and retry / discard."""

from __future__ import annotations

import json
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince

from . import stats
from .chart import hourly_svg
from .dispatch import publish
from .models import OutboxEvent, VisitorIdentity

if TYPE_CHECKING:
    _OutboxEventAdmin = admin.ModelAdmin[OutboxEvent]
    _VisitorIdentityAdmin = admin.ModelAdmin[VisitorIdentity]
else:
    _OutboxEventAdmin = admin.ModelAdmin
    _VisitorIdentityAdmin = admin.ModelAdmin

Status = OutboxEvent.Status


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
    list_filter = ["status", "name", "last_status_code", "created_at"]
    search_fields = ["uuid", "name", "=visitor_id"]
    date_hierarchy = "created_at"
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
        with transaction.atomic():
            pks = list(
                queryset.filter(status__in=[Status.FAILED, Status.PENDING]).values_list(
                    "pk", flat=True
                )
            )
            changed = OutboxEvent.objects.filter(pk__in=pks).update(
                status=Status.PENDING, next_attempt_at=timezone.now(), attempts=0, failed_at=None
            )
            transaction.on_commit(partial(publish, pks))
        self.message_user(request, f"{changed} event(s) queued for delivery now.", messages.SUCCESS)

    @admin.action(description="Discard", permissions=["delete"])
    def discard(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        count = queryset.exclude(status=Status.SENDING).delete()[0]
        self.message_user(request, f"{count} event(s) discarded.", messages.SUCCESS)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")


@admin.register(VisitorIdentity)
class VisitorIdentityAdmin(_VisitorIdentityAdmin):
    list_display = ["user", "visitor_id", "first_seen", "last_seen"]
    search_fields = ["visitor_id", "user__username", "user__email"]
    raw_id_fields = ["user"]
    readonly_fields = ["first_seen", "last_seen"]
