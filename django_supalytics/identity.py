"""The visitor ID stored with a user: read it, link it, forget it."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from .conf import conf
from .models import OutboxEvent, VisitorIdentity

logger = logging.getLogger("django_supalytics")

#: ``last_seen`` is refreshed at most this often, so a returning visitor costs no write.
LAST_SEEN_RESOLUTION = timedelta(hours=1)


def _authenticated(user: Any) -> bool:
    return user is not None and bool(getattr(user, "is_authenticated", False)) and user.pk


def get_visitor_id(user: Any) -> str | None:
    """The visitor ID stored for ``user``, or None."""
    if not _authenticated(user):
        return None
    field = conf.USER_FIELD
    if field:
        return getattr(user, field, None) or None
    try:
        return user.supalytics_identity.visitor_id  # type: ignore[no-any-return]
    except VisitorIdentity.DoesNotExist:
        return None


def link_visitor(user: Any, visitor_id: str) -> bool:
    """Store ``visitor_id`` for ``user`` as ``ATTRIBUTION`` says; True when it was written.

    ``visitor_id`` must already be valid. With first-touch attribution (the default) a user who
    has an ID keeps it; with ``"last"`` a different ID replaces it.
    """
    if not _authenticated(user):
        return False
    replace = conf.ATTRIBUTION == "last"
    field = conf.USER_FIELD
    if field:
        current = getattr(user, field, None)
        if current == visitor_id or (current and not replace):
            return False
        setattr(user, field, visitor_id)
        type(user)._default_manager.filter(pk=user.pk).update(**{field: visitor_id})
        return True
    now = timezone.now()
    identity = VisitorIdentity.objects.filter(user=user).first()
    if identity is None:
        try:
            with transaction.atomic():
                identity = VisitorIdentity.objects.create(
                    user=user, visitor_id=visitor_id, first_seen=now, last_seen=now
                )
        except IntegrityError:
            # Another request linked this user a moment ago.
            return False
        user.supalytics_identity = identity
        return True
    if identity.visitor_id != visitor_id and replace:
        identity.visitor_id = visitor_id
        identity.last_seen = now
        identity.save(update_fields=["visitor_id", "last_seen"])
        user.supalytics_identity = identity
        return True
    if identity.visitor_id == visitor_id and now - identity.last_seen > LAST_SEEN_RESOLUTION:
        VisitorIdentity.objects.filter(pk=identity.pk).update(last_seen=now)
    return False


def forget_visitor(visitor_id: str) -> dict[str, int]:
    """Remove ``visitor_id`` from stored identities and from outbox rows not yet sent."""
    counts = {"identities": 0, "events": 0}
    with transaction.atomic():
        field = conf.USER_FIELD
        if field:
            from django.contrib.auth import get_user_model

            model = get_user_model()
            empty = None if model._meta.get_field(field).null else ""
            counts["identities"] = model._default_manager.filter(**{field: visitor_id}).update(
                **{field: empty}
            )
        else:
            counts["identities"] = VisitorIdentity.objects.filter(visitor_id=visitor_id).delete()[0]
        counts["events"] = (
            OutboxEvent.objects.filter(visitor_id=visitor_id)
            .exclude(status=OutboxEvent.Status.SENT)
            .update(visitor_id="")
        )
    return counts
