"""The outbox of events to send, and the visitor ID stored for each user."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models, router
from django.db.models import Q
from django.utils import timezone

from .client import Kind, Outcome
from .queryset import DbNow, OutboxEventQuerySet, claimable_condition, db_now
from .validation import (
    NAME_MAX_LENGTH,
    VISITOR_ID_MAX_LENGTH,
    MetadataDecoder,
    MetadataEncoder,
    visitor_id_validator,
)
from .waits import RATE_LIMIT_WAIT_FLOOR, backoff

__all__ = ["BackfillRecord", "OutboxEvent", "SuppressedVisitor", "VisitorIdentity"]
__all__ += ["claimable_condition", "db_now"]


def outbox_alias() -> str:
    """The database of the outbox: the router's choice for writing ``OutboxEvent``."""
    return router.db_for_write(OutboxEvent)


def outbox_aliases() -> list[str]:
    """Every database the outbox lives in: the router's for ``OutboxEvent``, then those of
    ``SUPALYTICS["OUTBOX_DATABASES"]`` (where ``track(using=...)`` writes too)."""
    from .conf import conf

    aliases = [outbox_alias()]
    aliases.extend(alias for alias in conf.OUTBOX_DATABASES if alias not in aliases)
    return aliases


class OutboxEvent(models.Model):
    """One tracked event, from ``track()`` until the API accepted it (and for a while after)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        #: Older than its name's ``MAX_AGE`` when its turn came: never sent.
        EXPIRED = "expired", "Expired"

    class Priority(models.IntegerChoices):
        """Live rows are always claimed before bulk ones (lower first)."""

        LIVE = 0, "Live"
        BULK = 1, "Bulk"

    uuid = models.UUIDField(
        default=uuid.uuid4,
        unique=True,
        editable=False,
        help_text="Sent as the Idempotency-Key header on every attempt.",
    )
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    visitor_id = models.CharField(max_length=VISITOR_ID_MAX_LENGTH, blank=True)
    metadata = models.JSONField(
        default=dict, blank=True, encoder=MetadataEncoder, decoder=MetadataDecoder
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    priority = models.PositiveSmallIntegerField(
        choices=Priority.choices,
        default=Priority.LIVE,
        db_default=Priority.LIVE,  # rows inserted by raw SQL (a bulk load) are live
        help_text="Live rows are claimed first; bulk rows (backfills, imports) get the rest.",
    )
    attempts = models.PositiveIntegerField(
        default=0, help_text="Requests made; answers 429 are not counted."
    )
    # The database's clock, like every due time and lease (``db_now``).
    next_attempt_at = models.DateTimeField(db_default=DbNow())
    lease_owner = models.UUIDField(null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # NULL until an attempt fails: a row sent at the first try never writes one.
    attempt_log = models.JSONField(
        null=True,
        blank=True,
        editable=False,
        help_text="The last unsuccessful attempts: when, answer, error, duration (newest last).",
    )
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    objects = OutboxEventQuerySet.as_manager()

    class Meta:
        verbose_name = "outbox event"
        ordering = ["-created_at", "-id"]
        # Each index serves a query that runs (docs/operations.md#indexes). The status indexes
        # are partial where the backend has them (PostgreSQL, SQLite): the live rows are a few
        # among millions of retained sent ones. MySQL/MariaDB drop the condition and build the
        # same columns as a plain index: led by status for the live rows, the fallback that
        # serves the same queries there. (PostgreSQL orders a partial index by its second
        # column, the first being constant.)
        indexes = [
            # Claims read one lane at a time, each a range of this index.
            models.Index(
                fields=["status", "priority", "next_attempt_at"],
                condition=Q(status="pending"),
                name="supalytics_due_idx",
            ),
            models.Index(
                fields=["status", "lease_expires_at"],
                condition=Q(status="sending"),
                name="supalytics_lease_idx",
            ),
            # Not led by status: PostgreSQL drops a condition the predicate implies from the index
            # bounds, and a range on a second column would read the whole (large) index. Only
            # sent rows have a sent_at and only failed ones a failed_at, so the plain indexes
            # MySQL builds serve there too.
            models.Index(
                fields=["sent_at"], condition=Q(status="sent"), name="supalytics_sent_idx"
            ),
            models.Index(
                fields=["failed_at"], condition=Q(status="failed"), name="supalytics_failed_idx"
            ),
            models.Index(
                fields=["status", "created_at"],
                condition=Q(status="expired"),
                name="supalytics_expired_idx",
            ),
            models.Index(fields=["created_at", "id"], name="supalytics_created_idx"),
            models.Index(fields=["name"], name="supalytics_name_idx"),
            models.Index(fields=["visitor_id"], name="supalytics_visitor_idx"),
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

    def _held(self) -> OutboxEventQuerySet:
        """This row, for as long as this instance's lease holds it."""
        rows = OutboxEvent.objects.using(self._state.db or outbox_alias())
        return rows.filter(pk=self.pk, lease_owner=self.lease_owner)

    def release(self, delay: float, error: str = "") -> bool:
        """Hand the leased row back: ``pending``, due in ``delay`` seconds by the database's
        clock, no attempt spent. False if the lease was lost (another worker holds it)."""
        fields: dict[str, object] = {
            "status": self.Status.PENDING,
            "next_attempt_at": db_now(delay),
            "lease_owner": None,
            "lease_expires_at": None,
        }
        if error:
            fields["last_error"] = error
        return bool(self._held().update(**fields))

    def record(self, outcome: Outcome) -> tuple[Kind, float | None] | None:
        """Store the answer to a request for this leased row, in one UPDATE, as the retry
        classes say: ``sent``; ``failed`` (a refusal, or the last attempt the row earned); back
        to ``pending`` after a backoff (``retry``), or for the outcome's ``wait`` without
        spending an attempt (``rate_limited``: a 429; ``deferred``: the API failing for
        everyone, a redirect). Returns the kind and the seconds until the row is due again, or
        None if the lease was lost (the new holder's record wins)."""
        from .conf import conf

        kind = outcome.kind
        spent = kind not in (Kind.RATE_LIMITED, Kind.DEFERRED)
        fields: dict[str, object] = {}
        if kind is not Kind.SENT:  # a success writes no history: the row's sent_at says it
            history = [*(self.attempt_log or []), log_entry(outcome)]
            fields["attempt_log"] = history[-ATTEMPT_LOG_MAX:]
        attempts = self.attempts + int(spent)
        fields |= {
            "attempts": attempts,
            "last_status_code": outcome.status_code,
            "last_error": outcome.error,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        retry_in: float | None = None
        if kind is Kind.SENT:
            fields.update(status=self.Status.SENT, sent_at=db_now())
        elif kind is Kind.RETRY and attempts >= conf.MAX_ATTEMPTS:
            kind = Kind.FAILED
            fields.update(status=self.Status.FAILED, failed_at=db_now())
            fields["last_error"] = f"gave up after {attempts} attempts; last: {outcome.error}"
        elif kind is Kind.FAILED:
            fields.update(status=self.Status.FAILED, failed_at=db_now())
        else:
            if kind is Kind.RETRY:
                retry_in = backoff(attempts, conf.BACKOFF_BASE, conf.BACKOFF_MAX)
            else:
                # A 429's wait, the API failing for everyone: the limiter or the circuit holds
                # every sender back that long anyway; the row is due again within MAX_COUNTDOWN,
                # so that a wake-up for it is never far off, and is held again if need be.
                floor = RATE_LIMIT_WAIT_FLOOR if kind is Kind.RATE_LIMITED else 0.0
                retry_in = min(max(outcome.wait or floor, floor), conf.MAX_COUNTDOWN)
            fields.update(status=self.Status.PENDING, next_attempt_at=db_now(retry_in))
        if not self._held().update(**fields):
            return None
        for name, value in fields.items():
            if not hasattr(value, "resolve_expression"):
                setattr(self, name, value)
        return kind, retry_in


#: Unsuccessful attempts a row keeps in ``attempt_log``, the newest.
ATTEMPT_LOG_MAX = 20
#: Characters of an error an ``attempt_log`` entry keeps.
ATTEMPT_ERROR_MAX = 200


def log_entry(outcome: Outcome) -> dict[str, Any]:
    """One ``attempt_log`` entry: when the answer came (the worker's clock), its kind, status
    code, the start of its error, and the request's duration in milliseconds."""
    return {
        "at": timezone.now().isoformat(timespec="milliseconds"),
        "kind": outcome.kind.value,
        "status": outcome.status_code,
        "error": outcome.error[:ATTEMPT_ERROR_MAX],
        "ms": None if outcome.seconds is None else round(outcome.seconds * 1000),
    }


class VisitorIdentity(models.Model):
    """The Supalytics visitor ID seen for a user, used for their server-side events."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="supalytics_identity",
    )
    visitor_id = models.CharField(
        max_length=VISITOR_ID_MAX_LENGTH, db_index=True, validators=[visitor_id_validator]
    )
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "visitor identity"
        verbose_name_plural = "visitor identities"

    def __str__(self) -> str:
        return f"{self.user} → {self.visitor_id}"


class BackfillRecord(models.Model):
    """One source row that ``supalytics_backfill`` tracked an event for.

    Kept when the event itself is purged, so that a re-run never tracks (and sends) it again:
    the API may ignore idempotency keys, so the outbox must not count on them.
    """

    key = models.UUIDField(
        primary_key=True, help_text="The event's UUID: uuid5 of the model, the row and the event."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "backfilled row"

    def __str__(self) -> str:
        return str(self.key)


class SuppressedVisitor(models.Model):
    """A visitor who objected (``suppress_visitor``): a keyed hash of the ID, never the ID."""

    digest = models.CharField(max_length=64, unique=True, help_text="HMAC-SHA256 of the ID.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "suppressed visitor"

    def __str__(self) -> str:
        return self.digest[:12]
