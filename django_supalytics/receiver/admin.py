from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin

from .models import ReceivedEvent

if TYPE_CHECKING:
    _ReceivedEventAdmin = admin.ModelAdmin[ReceivedEvent]
else:
    _ReceivedEventAdmin = admin.ModelAdmin


@admin.register(ReceivedEvent)
class ReceivedEventAdmin(_ReceivedEventAdmin):
    list_display = ["name", "visitor_id", "key_prefix", "idempotency_key", "received_at"]
    list_filter = ["name", "key_prefix", "received_at"]
    search_fields = ["name", "=visitor_id", "=idempotency_key"]
    date_hierarchy = "received_at"
    readonly_fields = [f.name for f in ReceivedEvent._meta.fields]
