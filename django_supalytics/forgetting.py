"""Forgetting a visitor ID everywhere this app keeps it (docs/privacy.md), in bounded batches.

The ID is matched exactly: a metadata value (or key) equal to it, never one that merely
contains it, so forgetting ``"a"`` leaves every other visitor's ``"plan"`` and ``"amount"``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import router, transaction
from django.db.models import Model, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils.crypto import salted_hmac

from .conf import conf
from .models import OutboxEvent, SuppressedVisitor, VisitorIdentity, outbox_aliases

#: Rows one statement of a forget changes: short transactions, whatever the visitor's history.
FORGET_BATCH_SIZE = 500
#: What the admin history shows of a visitor identity once its ID is forgotten.
FORGOTTEN = "[forgotten]"
#: The salt of the suppression key, derived from ``SECRET_KEY`` (``salted_hmac``).
SUPPRESSION_SALT = "django_supalytics.suppression"


def visitor_digest(visitor_id: str) -> str:
    """The keyed hash stored for a suppressed ID: HMAC-SHA256 under a key derived from
    ``SECRET_KEY``. Without the key it cannot be computed, so it tells nothing of the ID; a new
    ``SECRET_KEY`` gives other digests, and the stored ones then match no ID."""
    key = salted_hmac(SUPPRESSION_SALT, "key", algorithm="sha256").digest()
    return hmac.new(key, visitor_id.encode(), hashlib.sha256).hexdigest()


def suppress_visitor(visitor_id: str) -> dict[str, int]:
    """Forget ``visitor_id`` (``forget_visitor``) and keep only its keyed hash, so that
    ``track()`` later sends events for it without it, or none (``SUPPRESSION``). Returns what
    ``forget_visitor`` returns. Idempotent. Needs ``SUPALYTICS["SUPPRESSION"]`` set: while it is
    ``"off"``, ``track()`` looks nothing up, and a suppression would not be kept."""
    if conf.SUPPRESSION == "off":
        raise ImproperlyConfigured(
            "suppress_visitor() needs SUPALYTICS['SUPPRESSION'] = 'anonymize' or 'drop': with "
            "'off' (the default) track() does not look suppressed visitors up."
        )
    if visitor_id:
        # First: a track() racing the forget no longer keeps the ID.
        SuppressedVisitor.objects.get_or_create(digest=visitor_digest(visitor_id))
    return forget_visitor(visitor_id)


def unsuppress_visitor(visitor_id: str) -> bool:
    """Let ``track()`` use ``visitor_id`` again; True if it was suppressed. What
    ``suppress_visitor`` forgot stays forgotten."""
    if not visitor_id:
        return False
    rows = SuppressedVisitor.objects.filter(digest=visitor_digest(visitor_id))
    return bool(rows.delete()[0])


def is_suppressed(visitor_id: str) -> bool:
    """True if ``visitor_id`` was suppressed: one look-up by the unique digest."""
    return bool(suppressed_among([visitor_id]))


def suppressed_among(visitor_ids: Iterable[str]) -> set[str]:
    """The IDs of ``visitor_ids`` that were suppressed: one query by the unique digest, none
    when no ID is given."""
    digests = {visitor_digest(visitor_id): visitor_id for visitor_id in visitor_ids if visitor_id}
    if not digests:
        return set()
    found = SuppressedVisitor.objects.filter(digest__in=digests).values_list("digest", flat=True)
    return {digests[digest] for digest in found}


def forget_visitor(visitor_id: str) -> dict[str, int]:
    """Remove ``visitor_id`` from stored identities, from every outbox row in every outbox
    database (``outbox_aliases()``), from the mock receiver's stored events (when installed),
    and from the admin history's names of visitor identities.

    Rows of any status lose it: pending ones are sent without it, sent ones kept for
    ``RETENTION_DAYS`` no longer hold it. Metadata entries whose value (or key) is the ID are
    removed. Returns the rows changed: ``{"identities", "events", "metadata", "received",
    "history"}``. Events the API already accepted are beyond reach: ask Supalytics to erase
    those.
    """
    counts = dict.fromkeys(("identities", "events", "metadata", "received", "history"), 0)
    if not visitor_id:
        return counts
    counts["identities"] = _forget_identities(visitor_id)
    counts["history"] = _forget_in_history(visitor_id)
    for alias in outbox_aliases():
        rows = OutboxEvent.objects.using(alias)
        counts["events"] += _blank_visitor(rows, visitor_id)
        counts["metadata"] += _forget_in_metadata(rows, visitor_id)
    if apps.is_installed("django_supalytics.receiver"):
        from .receiver.models import ReceivedEvent

        received = ReceivedEvent.objects.using(router.db_for_write(ReceivedEvent))
        counts["received"] = _blank_visitor(received, visitor_id)
        counts["received"] += _forget_in_metadata(received, visitor_id)
    return counts


def forget_user(user: Any) -> None:
    """What deleting a user does (``pre_delete``): forget its stored visitor ID everywhere,
    and blank the visitor ID of every outbox row linked to it."""
    from .identity import get_visitor_id

    stored = get_visitor_id(user) if user.pk else None
    for alias in outbox_aliases():
        linked = OutboxEvent.objects.using(alias).filter(user_id=user.pk).exclude(visitor_id="")
        _in_batches(linked, lambda batch: batch.update(visitor_id=""))
    if stored:
        forget_visitor(stored)


def _forget_identities(visitor_id: str) -> int:
    field = conf.USER_FIELD
    if field:
        from django.contrib.auth import get_user_model

        model = get_user_model()
        empty = None if model._meta.get_field(field).null else ""
        users = model._default_manager.filter(**{field: visitor_id})
        return _in_batches(users, lambda batch: batch.update(**{field: empty}))
    with transaction.atomic(using=router.db_for_write(VisitorIdentity)):
        return VisitorIdentity.objects.filter(visitor_id=visitor_id).delete()[0]


def _forget_in_history(visitor_id: str) -> int:
    """The admin history names a visitor identity "user → ID": keep the user, drop the ID."""
    if not apps.is_installed("django.contrib.admin"):
        return 0
    from django.contrib.admin.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    suffix = f" → {visitor_id}"
    entries = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(VisitorIdentity),
        object_repr__endswith=suffix,
    )
    changed = 0
    for entry in entries.only("pk", "object_repr").iterator():
        kept = entry.object_repr[: -len(suffix)]
        changed += LogEntry.objects.filter(pk=entry.pk).update(object_repr=f"{kept} → {FORGOTTEN}")
    return changed


def _blank_visitor(rows: QuerySet[Any], visitor_id: str) -> int:
    return _in_batches(
        rows.filter(visitor_id=visitor_id), lambda batch: batch.update(visitor_id="")
    )


def _in_batches(rows: QuerySet[Any], change: Callable[[QuerySet[Any]], int]) -> int:
    """Apply ``change`` to ``rows`` a batch of primary keys at a time, each batch in its own
    transaction, its statement repeating the condition; until none is left. ``change`` must
    take the rows out of ``rows`` (else they would come round again)."""
    alias = rows.db
    changed = 0
    while True:
        pks = list(rows.order_by("pk").values_list("pk", flat=True)[:FORGET_BATCH_SIZE])
        if not pks:
            return changed
        with transaction.atomic(using=alias):
            changed += change(rows.filter(pk__in=pks))


def _forget_in_metadata(rows: QuerySet[Any], visitor_id: str) -> int:
    """Remove the metadata entries whose value or key is ``visitor_id``, in batches."""
    # The database finds the rows whose JSON text holds the ID as json.dumps writes it (quotes
    # escaped), on PostgreSQL's jsonb as on SQLite; Python then keeps every entry that is not
    # exactly it. Rows where it was only part of a value stay candidates: paged by key.
    needle = json.dumps(visitor_id)[1:-1]
    candidates = (
        rows.annotate(_metadata_text=Cast("metadata", TextField()))
        .filter(_metadata_text__contains=needle)
        .order_by("pk")
    )
    alias = rows.db
    changed = 0
    last = 0
    while True:
        pks = list(candidates.filter(pk__gt=last).values_list("pk", flat=True)[:FORGET_BATCH_SIZE])
        if not pks:
            return changed
        last = pks[-1]
        with transaction.atomic(using=alias):
            for row in rows.filter(pk__in=pks).only("pk", "metadata").select_for_update():
                changed += _rewrite(rows, row, visitor_id)


def _rewrite(rows: QuerySet[Any], row: Model, visitor_id: str) -> int:
    metadata = row.metadata if isinstance(row.metadata, dict) else {}  # type: ignore[attr-defined]
    kept = {k: v for k, v in metadata.items() if k != visitor_id and v != visitor_id}
    if kept == metadata:
        return 0
    return rows.filter(pk=row.pk).update(metadata=kept)
