"""The outbox of events to send, and the visitor ID stored for each user."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from .validation import visitor_id_validator


class OutboxEvent(models.Model):
    """One tracked event, from ``track()`` until the API accepted it (and for a while after)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    uuid = models.UUIDField(
        default=uuid.uuid4,
        unique=True,
        editable=False,
        help_text="Sent as the Idempotency-Key header on every attempt.",
    )
    name = models.CharField(max_length=64, db_index=True)
    visitor_id = models.CharField(max_length=128, blank=True, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    status = models.CharField(
        max_length=8, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    attempts = models.PositiveIntegerField(
        default=0, help_text="Requests made; answers 429 are not counted."
    )
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_owner = models.UUIDField(null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "outbox event"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="supalytics_due_idx"),
            models.Index(fields=["status", "lease_expires_at"], name="supalytics_lease_idx"),
            models.Index(fields=["status", "sent_at"], name="supalytics_sent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    @property
    def payload(self) -> dict[str, Any]:
        """The JSON body sent to ``POST /v1/events``."""
        body: dict[str, Any] = {"name": self.name}
        if self.visitor_id:
            body["visitor_id"] = self.visitor_id
        if self.metadata:
            body["metadata"] = self.metadata
        return body


class VisitorIdentity(models.Model):
    """The Supalytics visitor ID seen for a user, used for their server-side events."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="supalytics_identity",
    )
    visitor_id = models.CharField(max_length=128, db_index=True, validators=[visitor_id_validator])
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "visitor identity"
        verbose_name_plural = "visitor identities"

    def __str__(self) -> str:
        return f"{self.user} → {self.visitor_id}"
