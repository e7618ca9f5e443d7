"""The outbox admin's own pages: an event's console (what happened, Retry now, Discard) and
"Retry failed since…" for after an outage or a key rotation."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from . import bulk
from .admin_list import ago, badge, exact, outbox_database, span
from .models import OutboxEvent, outbox_aliases
from .validation import MetadataEncoder

if TYPE_CHECKING:
    from .admin import OutboxEventAdmin

Status = OutboxEvent.Status
RETRYABLE = (Status.FAILED, Status.PENDING)

#: How each kind of unsuccessful attempt reads in the timeline, and the badge it wears.
KINDS = {
    "retry": ("retried later", Status.PENDING),
    "failed": ("failed", Status.FAILED),
    "rate_limited": ("rate limited (429)", Status.EXPIRED),
    "deferred": ("deferred", Status.EXPIRED),
}


def url_name(model_admin: OutboxEventAdmin, view: str) -> str:
    return f"admin:{model_admin.opts.app_label}_{model_admin.opts.model_name}_{view}"


def kept_query(request: HttpRequest) -> str:
    """The change page's query string (its ``_changelist_filters``, so the database too)."""
    query = request.GET.urlencode()
    return f"?{query}" if query else ""


def page_url(model_admin: OutboxEventAdmin, request: HttpRequest, view: str) -> str:
    """A page of the outbox admin, for the outbox database this request is about."""
    url = reverse(url_name(model_admin, view))
    alias = outbox_database(request)
    return url if alias == outbox_aliases()[0] else f"{url}?database={alias}"


def changelist_url(model_admin: OutboxEventAdmin, request: HttpRequest) -> str:
    return page_url(model_admin, request, "changelist")


def event_context(
    model_admin: OutboxEventAdmin, request: HttpRequest, row: OutboxEvent
) -> dict[str, Any]:
    """What the event page shows, and which of its buttons this user may press."""
    query = kept_query(request)
    can_retry = row.status in RETRYABLE and model_admin.has_retry_permission(request)
    can_discard = row.status != Status.SENDING and model_admin.has_delete_permission(request)
    return {
        "badge": badge(row.status),
        "lane": row.get_priority_display(),
        "user_url": user_url(row),
        "created_ago": ago(row.created_at),
        "next_attempt": row.next_attempt_at if row.status == Status.PENDING else None,
        "setting_to_fix": bulk.setting_to_fix(row.last_status_code),
        "payload_json": json.dumps(
            row.payload, cls=MetadataEncoder, indent=2, sort_keys=True, ensure_ascii=False
        ),
        "timeline": timeline(row),
        "sent_badge": badge(Status.SENT),
        "retry_url": (
            reverse(url_name(model_admin, "retry"), args=[row.pk]) + query if can_retry else ""
        ),
        "discard_url": (
            reverse(url_name(model_admin, "discard"), args=[row.pk]) + query if can_discard else ""
        ),
    }


def user_url(row: OutboxEvent) -> str:
    if row.user_id is None:
        return ""
    opts = OutboxEvent._meta.get_field("user").related_model._meta
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[row.user_id])
    except NoReverseMatch:
        return ""


def timeline(row: OutboxEvent) -> list[dict[str, Any]]:
    """The row's unsuccessful attempts (``attempt_log``, oldest first), each as it reads."""
    entries = []
    for entry in row.attempt_log or []:
        if not isinstance(entry, dict):
            continue
        try:
            at: datetime | None = datetime.fromisoformat(str(entry.get("at")))
        except ValueError:
            at = None
        label, looks = KINDS.get(
            str(entry.get("kind")), (str(entry.get("kind", "?")), Status.EXPIRED)
        )
        ms = entry.get("ms")
        entries.append(
            {
                "at": exact(at) if at else entry.get("at", ""),
                "kind": label,
                "badge": looks,
                "status": entry.get("status"),
                "error": entry.get("error") or "",
                "duration": f"{ms:,} ms" if isinstance(ms, int) else "",
            }
        )
    return entries


def one_row(
    model_admin: OutboxEventAdmin, request: HttpRequest, object_id: str
) -> QuerySet[OutboxEvent]:
    return model_admin.get_queryset(request).filter(pk=unquote(object_id))


def retry_view(model_admin: OutboxEventAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """Retry now, for one row: the same permission and the same re-checked condition as the
    action (a row sent or claimed since the page was shown is left as it is)."""
    allowed = model_admin.has_retry_permission(request)
    return act_on_one(
        model_admin, request, object_id, allowed, bulk.retry, "Queued for delivery now.", "retried"
    )


def discard_view(
    model_admin: OutboxEventAdmin, request: HttpRequest, object_id: str
) -> HttpResponse:
    """Discard, for one row: never a row a worker holds (``sending``)."""
    allowed = model_admin.has_delete_permission(request)
    return act_on_one(
        model_admin, request, object_id, allowed, bulk.discard, "Event discarded.", "discarded"
    )


def act_on_one(
    model_admin: OutboxEventAdmin,
    request: HttpRequest,
    object_id: str,
    allowed: bool,
    act: Callable[..., int],
    done: str,
    verb: str,
) -> HttpResponse:
    """A change-form button: ``act`` (a ``bulk`` function) on the one row, a message saying
    whether it happened, and back to the row's page."""
    if not allowed:
        raise PermissionDenied
    row = one_row(model_admin, request, object_id)
    if act(row, user=request.user):
        messages.success(request, done)
    else:
        messages.warning(request, f"Not {verb}: the event is {status_now(row)}.")
    return back(model_admin, request, row, object_id)


def status_now(row: QuerySet[OutboxEvent]) -> str:
    status = row.values_list("status", flat=True).first()
    return f"{status} now" if status else "gone"


def back(
    model_admin: OutboxEventAdmin,
    request: HttpRequest,
    row: QuerySet[OutboxEvent],
    object_id: str,
) -> HttpResponse:
    """To the event's page, or to the list once the event is gone."""
    if not row.exists():
        return HttpResponseRedirect(changelist_url(model_admin, request))
    url = reverse(url_name(model_admin, "change"), args=[object_id])
    return HttpResponseRedirect(url + kept_query(request))


class RetrySinceForm(forms.Form):
    """Which failed events "Retry failed since…" retries."""

    since = forms.DateTimeField(
        label="Failed since",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    name = forms.CharField(
        required=False, label="Event name", help_text="Only events of this exact name."
    )
    status_code = forms.IntegerField(
        required=False,
        min_value=100,
        max_value=599,
        label="Last status code",
        help_text="Only events whose last answer had this code.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        zone = timezone.get_current_timezone_name()
        self.fields["since"].help_text = f"Events that failed at or after this time ({zone})."


def retry_since_view(model_admin: OutboxEventAdmin, request: HttpRequest) -> HttpResponse:
    """Retry every event that failed since a time (of one name, one status code), in batches
    on a thread of its own: the request neither waits for it nor loads the rows."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    can_retry = model_admin.has_retry_permission(request)
    alias = outbox_database(request)
    rows = OutboxEvent.objects.using(alias)
    if request.method == "POST":
        if not can_retry:
            raise PermissionDenied
        form = RetrySinceForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            which = {"name": data["name"] or None, "status_code": data["status_code"]}
            # One count through the failed-rows index, before the thread changes them.
            matching = bulk.failed_since(data["since"], using=alias, **which).count()
            bulk.retry_failed_since(data["since"], using=alias, user=request.user, **which)
            messages.success(
                request,
                f"Retrying {matching} event(s) that failed since {exact(data['since'])} in the "
                "background: they turn pending batch by batch, then go out in turn.",
            )
            return HttpResponseRedirect(changelist_url(model_admin, request))
    else:
        an_hour_ago = timezone.localtime().replace(second=0, microsecond=0) - timedelta(hours=1)
        form = RetrySinceForm(initial={"since": an_hour_ago})
    oldest = (
        rows.filter(status=Status.FAILED)
        .order_by("failed_at")
        .values_list("failed_at", flat=True)
        .first()
    )
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Retry failed since\u2026",
        "opts": model_admin.opts,
        "form": form,
        "can_retry": can_retry,
        "failed_count": rows.filter(status=Status.FAILED).count(),
        "oldest_failed": span((timezone.now() - oldest).total_seconds()) if oldest else None,
        "changelist_url": changelist_url(model_admin, request),
        "media": model_admin.media + form.media,
        "database": alias if alias != outbox_aliases()[0] else "",
    }
    return TemplateResponse(
        request, "admin/django_supalytics/outboxevent/retry_failed_since.html", context
    )
