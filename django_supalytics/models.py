"""The outbox of events to send, and the visitor ID stored for each user."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models, router
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from .client import RATE_LIMIT_WAIT_FLOOR, Kind, Outcome, backoff
from .validation import NAME_MAX_LENGTH, VISITOR_ID_MAX_LENGTH, visitor_id_validator

if TYPE_CHECKING:
    from django.db.models.expressions import Combinable


class DbNow(Now):
    """``Now()``, in UTC on MySQL/MariaDB too, to the microsecond on SQLite.

    Django stores UTC there (with ``USE_TZ``) but does not set the session's time zone, and
    MySQL's ``CURRENT_TIMESTAMP`` is in the session's time zone: ``UTC_TIMESTAMP`` is not.
    """

    def as_mysql(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        template = "UTC_TIMESTAMP(6)" if settings.USE_TZ else "CURRENT_TIMESTAMP(6)"
        return self.as_sql(compiler, connection, template=template, **extra_context)

    def as_sqlite(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        # SQLite's clock has milliseconds; stored times have microseconds, compared as text.
        # Now is the end of the current millisecond, so that a time stored during it is due.
        template = "(STRFTIME('%%%%Y-%%%%m-%%%%d %%%%H:%%%%M:%%%%f', 'NOW') || '999')"
        return self.as_sql(compiler, connection, template=template, **extra_context)


def db_now(offset: float = 0.0) -> Combinable:
    """The database's clock, ``offset`` seconds on: the one clock of due times and leases,
    whatever the clocks of the web servers and workers say."""
    if not offset:
        return DbNow()
    return DbNow() + timedelta(seconds=offset)


def outbox_alias() -> str:
    """The database of the outbox: the router's choice for writing ``OutboxEvent``."""
    return router.db_for_write(OutboxEvent)


class OutboxEventQuerySet(models.QuerySet["OutboxEvent"]):
    """The queries of delivery, the sweeper, the purge and the admin, each served by an index
    of ``OutboxEvent.Meta.indexes`` (see docs/operations.md#indexes)."""

    def due(self, grace: float = 0.0) -> OutboxEventQuerySet:
        """Pending rows due (by the database's clock) for at least ``grace`` seconds."""
        return self.filter(status=OutboxEvent.Status.PENDING, next_attempt_at__lte=db_now(-grace))

    def expired_leases(self) -> OutboxEventQuerySet:
        """Rows left ``sending`` by a worker whose lease ran out."""
        return self.filter(status=OutboxEvent.Status.SENDING, lease_expires_at__lt=db_now())

    def claimable(self) -> OutboxEventQuerySet:
        """Due pending rows and rows under an expired lease."""
        return self.filter(claimable_condition())

    def live(self) -> OutboxEventQuerySet:
        """Rows not yet sent or failed (served by the partial indexes)."""
        return self.filter(
            Q(status=OutboxEvent.Status.PENDING) | Q(status=OutboxEvent.Status.SENDING)
        )

    def purgeable(
        self, sent_older_than: timedelta | None, failed_older_than: timedelta | None = None
    ) -> OutboxEventQuerySet:
        """Sent rows sent before ``sent_older_than`` ago, and failed rows that failed before
        ``failed_older_than`` ago (``None``: none of that status)."""
        condition = Q(pk__in=[])
        if sent_older_than is not None:
            condition |= Q(
                status=OutboxEvent.Status.SENT,
                sent_at__lt=db_now(-sent_older_than.total_seconds()),
            )
        if failed_older_than is not None:
            condition |= Q(
                status=OutboxEvent.Status.FAILED,
                failed_at__lt=db_now(-failed_older_than.total_seconds()),
            )
        return self.filter(condition)


def claimable_condition() -> Q:
    status = OutboxEvent.Status
    return Q(status=status.PENDING, next_attempt_at__lte=db_now()) | Q(
        status=status.SENDING, lease_expires_at__lt=db_now()
    )


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
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    visitor_id = models.CharField(max_length=VISITOR_ID_MAX_LENGTH, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(
        default=0, help_text="Requests made; answers 429 are not counted."
    )
    # The database's clock, like every due time and lease (``db_now``).
    next_attempt_at = models.DateTimeField(db_default=DbNow())
    lease_owner = models.UUIDField(null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
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
            models.Index(
                fields=["status", "next_attempt_at"],
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
        """Store the API's answer to a request for this leased row, as the retry classes say:
        ``sent``; ``failed`` (a refusal, or the last attempt); back to ``pending`` after a
        backoff (``retry``) or the 429's wait (``rate_limited``, no attempt spent). Returns the
        kind and the seconds until the row is due again, or None if the lease was lost (the
        new holder's record wins)."""
        from .conf import conf

        attempts = self.attempts + (0 if outcome.kind is Kind.RATE_LIMITED else 1)
        fields: dict[str, object] = {
            "attempts": attempts,
            "last_status_code": outcome.status_code,
            "last_error": outcome.error,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        retry_in: float | None = None
        kind = outcome.kind
        if kind is Kind.SENT:
            fields.update(status=self.Status.SENT, sent_at=db_now())
        elif kind is Kind.RETRY and attempts >= conf.MAX_ATTEMPTS:
            kind = Kind.FAILED
            fields.update(status=self.Status.FAILED, failed_at=db_now())
            fields["last_error"] = f"gave up after {attempts} attempts; last: {outcome.error}"
        elif kind is Kind.FAILED:
            fields.update(status=self.Status.FAILED, failed_at=db_now())
        else:
            if kind is Kind.RATE_LIMITED:
                retry_in = outcome.wait or RATE_LIMIT_WAIT_FLOOR
            else:
                retry_in = backoff(attempts, conf.BACKOFF_BASE, conf.BACKOFF_MAX)
            fields.update(status=self.Status.PENDING, next_attempt_at=db_now(retry_in))
        if not self._held().update(**fields):
            return None
        for name, value in fields.items():
            if not hasattr(value, "resolve_expression"):
                setattr(self, name, value)
        return kind, retry_in


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
