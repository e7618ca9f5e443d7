"""Retry and discard at scale, for the admin: in batches, never every primary key at once, the
status re-checked in each statement, handed over the way ``track()`` hands over, and written to
the admin's history (``LogEntry``).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connections, transaction
from django.db.models import Q, QuerySet

from .dispatch import publisher
from .models import OutboxEvent, db_now, outbox_alias

logger = logging.getLogger("django_supalytics")
Status = OutboxEvent.Status

#: Rows one statement changes: a short transaction, a few milliseconds.
BATCH_SIZE = 1000
#: Up to this many rows get a history entry each; more get one entry for them all.
LOG_EACH_MAX = 100
RETRYABLE = Q(status=Status.FAILED) | Q(status=Status.PENDING)


def retry(
    queryset: QuerySet[OutboxEvent], *, user: Any = None, batch_size: int = BATCH_SIZE
) -> int:
    """Make the failed and pending rows of ``queryset`` due now with their attempts reset, and
    hand them over; the rows changed. A row a worker claimed or sent meanwhile stays as it is."""
    alias = queryset.db
    history = _History(user, alias, CHANGE, "Retried now: due at once, attempts reset.")
    changed = 0
    # Pending rows stay pending, so they are paged by primary key, first; failed rows leave
    # the set as they change, so each batch is the next one (through the failed index).
    pending = queryset.filter(status=Status.PENDING).order_by("pk")
    failed = queryset.filter(status=Status.FAILED).order_by("failed_at", "pk")
    for rows, paged in ((pending, True), (failed, False)):
        last = 0
        while True:
            page = rows.filter(pk__gt=last) if paged else rows
            pks = list(page.values_list("pk", flat=True)[:batch_size])
            if not pks:
                break
            last = pks[-1]
            mine = _retry_batch(alias, pks)
            history.add(mine)
            changed += len(mine)
    history.close()
    return changed


def _retry_batch(alias: str, pks: list[int]) -> list[int]:
    rows = OutboxEvent.objects.using(alias).filter(RETRYABLE, pk__in=pks)
    with transaction.atomic(using=alias):
        mine = list(rows.select_for_update().values_list("pk", flat=True))
        changed = rows.filter(pk__in=mine).update(
            status=Status.PENDING, next_attempt_at=db_now(), attempts=0, failed_at=None
        )
        if changed < len(mine):  # no row locks (SQLite): a worker took some meanwhile
            done = rows.filter(pk__in=mine, status=Status.PENDING, attempts=0)
            mine = list(done.values_list("pk", flat=True))
        transaction.on_commit(lambda: publisher.submit(mine, alias), using=alias)
    return mine


def discard(
    queryset: QuerySet[OutboxEvent], *, user: Any = None, batch_size: int = BATCH_SIZE
) -> int:
    """Delete the rows of ``queryset`` that no worker holds (not ``sending``), in batches; the
    rows deleted."""
    alias = queryset.db
    history = _History(user, alias, DELETION, "Discarded.")
    deleted = last = 0
    while True:
        pks = list(
            queryset.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:batch_size]
        )
        if not pks:
            break
        last = pks[-1]
        rows = OutboxEvent.objects.using(alias).filter(pk__in=pks).exclude(status=Status.SENDING)
        with transaction.atomic(using=alias):
            mine = list(rows.select_for_update().values_list("pk", flat=True))
            history.add(mine)  # while the rows are there to name
            # The DELETE carries the condition: a row claimed since is not deleted under its
            # worker. A raw DELETE: Django's delete() would select the rows again by pk alone.
            deleted += rows.filter(pk__in=mine)._raw_delete(alias) if mine else 0
    history.close()
    return deleted


def retry_failed_since(
    since: datetime,
    *,
    name: str | None = None,
    status_code: int | None = None,
    using: str | None = None,
    user: Any = None,
) -> threading.Thread:
    """Retry every row that failed at or after ``since`` (of that name, last answered with that
    status code, if given), on a thread of its own; the caller does not wait. The rows are
    those still failed when their batch comes: re-running it is harmless."""
    rows = failed_since(since, name=name, status_code=status_code, using=using)

    def run() -> None:
        try:
            count = retry(rows, user=user)
            logger.info("supalytics: %d failed events since %s retried", count, since)
        except Exception:
            logger.exception("supalytics: retrying the events failed since %s stopped", since)
        finally:
            connections.close_all()  # this thread's own

    thread = threading.Thread(target=run, name="supalytics-retry", daemon=True)
    thread.start()
    return thread


def failed_since(
    since: datetime,
    *,
    name: str | None = None,
    status_code: int | None = None,
    using: str | None = None,
) -> QuerySet[OutboxEvent]:
    """The rows that failed at or after ``since`` (through ``supalytics_failed_idx``)."""
    rows = OutboxEvent.objects.using(using or outbox_alias())
    rows = rows.filter(status=Status.FAILED, failed_at__gte=since)
    if name:
        rows = rows.filter(name=name)
    if status_code is not None:
        rows = rows.filter(last_status_code=status_code)
    return rows


def setting_to_fix(status_code: int | None) -> str:
    """The ``SUPALYTICS`` key an answer says is wrong: ``API_KEY`` for 401 and 403,
    ``ENDPOINT`` for 404 and a redirect; "" otherwise."""
    if status_code in (401, 403):
        return "API_KEY"
    if status_code == 404 or (status_code is not None and 300 <= status_code < 400):
        return "ENDPOINT"
    return ""


def retry_helps(row: OutboxEvent) -> bool | None:
    """Whether retrying a failed row can work as things are (False: a setting must be fixed
    first); None for a row that has not failed."""
    if row.status != Status.FAILED:
        return None
    return not setting_to_fix(row.last_status_code)


class _History:
    """The admin history of one bulk change: an entry per row for the first ``LOG_EACH_MAX``
    rows, then one entry for the rest. Nothing without a user (a script)."""

    def __init__(self, user: Any, alias: str, action: int, message: str) -> None:
        self.user, self.alias, self.action, self.message = user, alias, action, message
        self.each = 0
        self.rest = 0

    def add(self, pks: list[int]) -> None:
        if self.user is None or not pks:
            return
        named = pks[: max(0, LOG_EACH_MAX - self.each)]
        if named:
            objects = list(OutboxEvent.objects.using(self.alias).filter(pk__in=named))
            LogEntry.objects.log_actions(
                self.user.pk, objects, self.action, change_message=self.message
            )
            self.each += len(named)
        self.rest += len(pks) - len(named)

    def close(self) -> None:
        if self.user is None or not self.rest:
            return
        LogEntry.objects.create(
            user_id=self.user.pk,
            content_type=ContentType.objects.get_for_model(OutboxEvent),
            object_id=None,
            object_repr=f"{self.rest:,} more outbox events",
            action_flag=self.action,
            change_message=self.message,
        )
