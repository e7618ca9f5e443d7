from __future__ import annotations

from django.db import models
from django.utils import timezone

from ..validation import IDEMPOTENCY_KEY_MAX_LENGTH, NAME_MAX_LENGTH, VISITOR_ID_MAX_LENGTH


class ReceivedEvent(models.Model):
    """An event the mock receiver accepted. Only a prefix of the API key is kept."""

    name = models.CharField(max_length=NAME_MAX_LENGTH, db_index=True)
    visitor_id = models.CharField(max_length=VISITOR_ID_MAX_LENGTH, blank=True, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=IDEMPOTENCY_KEY_MAX_LENGTH, blank=True)
    key_id = models.CharField(max_length=16, help_text="A digest of the API key.")
    key_prefix = models.CharField(max_length=12)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = "received event"
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["key_id", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="supalytics_receiver_idempotency",
            )
        ]

    def __str__(self) -> str:
        return self.name
