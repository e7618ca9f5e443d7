"""The outbox's queries and its one retry layer for the database.

Every query that delivery, the sweeper, the purge and the admin run on ``OutboxEvent`` is a
method of ``OutboxEventQuerySet``, each served by an index of ``OutboxEvent.Meta.indexes``
(docs/operations.md#indexes). Times come from the database's clock (``db_now``).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections, models, transaction
from django.db.models import Q
from django.db.models.functions import Now

if TYPE_CHECKING:
    from django.db.models.expressions import Combinable

    from .models import OutboxEvent

logger = logging.getLogger("django_supalytics")

T = TypeVar("T")


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


#: The database retry layer: a statement or short transaction that met a dropped connection,
#: a restart or a lock is tried again, on a new connection, for up to this long.
DB_RETRY_SECONDS = 20.0


def retrying(alias: str, work: Callable[[], T], seconds: float = DB_RETRY_SECONDS) -> T:
    """Run ``work`` (one statement, or one ``atomic`` block of its own) on ``alias``, and run it
    again after a transient database error (``OperationalError``, ``InterfaceError``) for up to
    ``seconds``: the one place delivery waits out the database.

    Inside a transaction of the caller nothing can be retried (the transaction is lost): the
    error is raised at once.
    """
    connection = connections[alias]
    deadline = time.monotonic() + seconds
    delay = 0.05
    while True:
        try:
            return work()
        except (OperationalError, InterfaceError) as exc:
            if connection.in_atomic_block or time.monotonic() + delay > deadline:
                raise
            logger.warning("supalytics: database error (%s); trying again", exc)
            # A dropped connection stays broken until closed: the next try connects anew.
            connection.close()
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 2.0)


#: Rows one DELETE of the purge removes: small transactions, a few milliseconds each.
PURGE_BATCH_SIZE = 1000


class OutboxEventQuerySet(models.QuerySet["OutboxEvent"]):
    """The queries and bulk state changes of delivery, the sweeper, the purge and the admin."""

    def due(self, grace: float = 0.0) -> OutboxEventQuerySet:
        """Pending rows due (by the database's clock) for at least ``grace`` seconds."""
        return self.filter(status="pending", next_attempt_at__lte=db_now(-grace))

    def expired_leases(self) -> OutboxEventQuerySet:
        """Rows left ``sending`` by a worker whose lease ran out."""
        return self.filter(status="sending", lease_expires_at__lt=db_now())

    def claimable(self) -> OutboxEventQuerySet:
        """Due pending rows and rows under an expired lease."""
        return self.filter(claimable_condition())

    def live(self) -> OutboxEventQuerySet:
        """Rows not yet sent or failed (served by the partial indexes)."""
        return self.filter(Q(status="pending") | Q(status="sending"))

    def claim(
        self,
        limit: int,
        ids: Iterable[int] | None = None,
        exclude: Collection[int] = (),
        lease: float | None = None,
        token: uuid.UUID | None = None,
    ) -> list[OutboxEvent]:
        """Lease up to ``limit`` claimable rows (of ``ids``, if given; never those of
        ``exclude``): due pending rows, live before bulk and longest due first within a lane,
        then expired leases. One short transaction on this queryset's database; the lease and
        due times by its clock. Rows older than their name's ``MAX_AGE`` end ``expired``
        instead, unsent.

        The rows come back ``sending`` under one new ``lease_owner`` token (``token``, if
        given): until the lease runs out, only that token may record or release them.
        """
        from .conf import conf

        alias = self.db
        rows = self.model.objects.using(alias)
        candidates = rows.all() if ids is None else rows.filter(pk__in=list(ids))
        if exclude:
            candidates = candidates.exclude(pk__in=list(exclude))
        token = token or uuid.uuid4()
        seconds = conf.LEASE_SECONDS if lease is None else lease
        with transaction.atomic(using=alias):
            # Each lane's pending rows, then expired leases, each a range of its index read in
            # order: the scan stops after ``limit`` rows, so InnoDB locks no more than it
            # returns, and PostgreSQL sorts nothing however large a backlog.
            pks: list[int] = []
            for lane in sorted(self.model.Priority.values):
                due = candidates.due().filter(priority=lane).order_by("next_attempt_at", "pk")
                pks += _lock(due, limit - len(pks)) if len(pks) < limit else []
            if len(pks) < limit:
                expired = candidates.expired_leases().order_by("lease_expires_at", "pk")
                pks += _lock(expired, limit - len(pks))
            if not pks:
                return []
            too_old = stale_condition(conf.MAX_AGE)
            if too_old is not None:
                expired = rows.filter(pk__in=pks).filter(too_old)
                count = expired.update(status="expired", lease_owner=None, lease_expires_at=None)
                if count:
                    logger.info("supalytics: %d events expired unsent (MAX_AGE)", count)
            # The condition again in the UPDATE: without row locks (SQLite) a concurrent
            # claimer may have taken a row since the SELECT.
            rows.claimable().filter(pk__in=pks).update(
                status="sending", lease_owner=token, lease_expires_at=db_now(seconds)
            )
            # Read back on the same connection (not a replica the router may pick for reads).
            return list(rows.filter(pk__in=pks).held_by(token))

    def held_by(self, token: uuid.UUID) -> OutboxEventQuerySet:
        """The rows leased under ``token``, in the order a claim returns them."""
        held = self.filter(status="sending", lease_owner=token)
        return held.order_by("priority", "next_attempt_at", "pk")

    def renew(self, token: uuid.UUID, pks: Collection[int], lease: float) -> set[int]:
        """Extend the lease of those of ``pks`` still held under ``token``; the pks held."""
        held = self.filter(pk__in=list(pks), lease_owner=token, status="sending")
        if held.update(lease_expires_at=db_now(lease)) == len(pks):
            return set(pks)
        return set(held.values_list("pk", flat=True))

    def reclaim_expired(self) -> int:
        """Hand rows whose lease ran out (a worker died mid-send) back to the queue."""
        return self.expired_leases().update(
            status="pending", lease_owner=None, lease_expires_at=None
        )

    def purgeable(
        self, sent_older_than: timedelta | None, failed_older_than: timedelta | None = None
    ) -> OutboxEventQuerySet:
        """Sent rows sent before ``sent_older_than`` ago (and expired rows created before
        then), and failed rows that failed before ``failed_older_than`` ago (``None``: none of
        that status)."""
        condition = Q(pk__in=[])
        if sent_older_than is not None:
            cutoff = db_now(-sent_older_than.total_seconds())
            condition |= Q(status="sent", sent_at__lt=cutoff)
            condition |= Q(status="expired", created_at__lt=cutoff)
        if failed_older_than is not None:
            condition |= Q(
                status="failed", failed_at__lt=db_now(-failed_older_than.total_seconds())
            )
        return self.filter(condition)

    def purge(self, batch_size: int = PURGE_BATCH_SIZE) -> int:
        """Delete these rows in batches of ``batch_size``, so no transaction grows large.

        Each DELETE repeats this queryset's condition (status and age), so a row retried or
        re-sent since it was selected stays.
        """
        deleted = 0
        while True:
            pks = list(self.values_list("pk", flat=True)[:batch_size])
            if not pks:
                return deleted
            # A raw DELETE: Django's delete() may first SELECT the rows, then delete them by
            # primary key alone, losing the condition.
            deleted += self.filter(pk__in=pks)._raw_delete(self.db)


def _lock(rows: OutboxEventQuerySet, limit: int) -> list[int]:
    return list(rows.select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit])


def stale_condition(max_age: dict[str, float]) -> Q | None:
    """Rows older than their name's age limit (``{name: seconds}``) by the database's clock, or
    None when no name has one."""
    condition = None
    for name, seconds in sorted(max_age.items()):
        older = Q(name=name, created_at__lt=db_now(-float(seconds)))
        condition = older if condition is None else condition | older
    return condition


def claimable_condition() -> Q:
    return Q(status="pending", next_attempt_at__lte=db_now()) | Q(
        status="sending", lease_expires_at__lt=db_now()
    )
