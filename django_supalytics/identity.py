"""The visitor ID stored with a user: read it, link it, forget it."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Model
from django.utils import timezone

from .conf import conf
from .models import VisitorIdentity
from .validation import is_valid_visitor_id, validate_visitor_id

logger = logging.getLogger("django_supalytics")

#: Session key remembering ``[user pk, visitor ID, Unix time]`` of this session's last link.
SESSION_KEY = "_supalytics_linked_vid"
#: With ``ATTRIBUTION = "last"``, a session replaces the stored ID at most this often, so a
#: client that varies its visitor ID cannot make every request write.
RELINK_INTERVAL = 60.0

#: ``last_seen`` is refreshed at most this often, so a returning visitor costs no write.
LAST_SEEN_RESOLUTION = timedelta(hours=1)


def is_authenticated(user: Any) -> bool:
    """True for a saved, authenticated user (not ``None``, ``AnonymousUser`` or unsaved)."""
    return (
        user is not None
        and bool(getattr(user, "is_authenticated", False))
        and getattr(user, "pk", None) is not None
    )


def _user_model(user: Any) -> type[Model]:
    # ``_meta`` rather than ``type(user)``: ``request.user`` is a ``SimpleLazyObject``.
    return user._meta.model  # type: ignore[no-any-return]


def get_visitor_id(user: Any) -> str | None:
    """The visitor ID stored for ``user``, or None (also when what is stored is not valid)."""
    if not is_authenticated(user):
        return None
    field = conf.USER_FIELD
    if field:
        value = getattr(user, field, None)
    else:
        try:
            value = user.supalytics_identity.visitor_id
        except VisitorIdentity.DoesNotExist:
            return None
    if not value:
        return None
    if not is_valid_visitor_id(value):
        # Stored before validation, or by other code: an event with it would be refused forever.
        logger.warning("supalytics: ignored an invalid stored visitor ID of user %s", user.pk)
        return None
    return str(value)


def link_visitor(user: Any, visitor_id: str) -> bool:
    """Store ``visitor_id`` for ``user`` as ``ATTRIBUTION`` says; True when it was written.

    Raises ``InvalidEvent`` (field ``visitor_id``) for an ID the API would refuse. With
    first-touch attribution (the default) a user who has an ID keeps it; with ``"last"`` a
    different ID replaces it.
    """
    validate_visitor_id(visitor_id)
    if not is_authenticated(user):
        return False
    replace = conf.ATTRIBUTION == "last"
    field = conf.USER_FIELD
    if field:
        current = getattr(user, field, None)
        if current == visitor_id or (current and is_valid_visitor_id(current) and not replace):
            return False
        setattr(user, field, visitor_id)
        _user_model(user)._default_manager.filter(pk=user.pk).update(**{field: visitor_id})
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
    if identity.visitor_id != visitor_id and (
        replace or not is_valid_visitor_id(identity.visitor_id)
    ):
        identity.visitor_id = visitor_id
        identity.last_seen = now
        identity.save(update_fields=["visitor_id", "last_seen"])
        user.supalytics_identity = identity
        return True
    if identity.visitor_id == visitor_id and now - identity.last_seen > LAST_SEEN_RESOLUTION:
        VisitorIdentity.objects.filter(pk=identity.pk).update(last_seen=now)
    return False


def link_request_visitor(request: Any, user: Any = None) -> bool:
    """Store the request's visitor ID (``request.supalytics``) on ``user`` (default: the
    logged-in user), unless this session already did; True if it looked the user up.

    The session remembers its last link, so a client sending the same ID, or (with first-touch
    attribution) any ID once linked, costs no query; with ``"last"`` a session replaces the
    stored ID at most every ``RELINK_INTERVAL`` seconds.
    """
    state = getattr(request, "supalytics", None)
    visitor_id = state.visitor_id if state is not None else None
    user = user if user is not None else getattr(request, "user", None)
    if not visitor_id or not is_authenticated(user):
        return False
    session = getattr(request, "session", None)
    if _linked_already(session, user, visitor_id):
        return False
    link_visitor(user, visitor_id)
    if session is not None:
        session[SESSION_KEY] = [str(user.pk), visitor_id, int(time.time())]
    return True


def _linked_already(session: Any, user: Any, visitor_id: str) -> bool:
    """True when this session needs no look-up: nothing can have changed since its link."""
    remembered = session.get(SESSION_KEY) if session is not None else None
    if not isinstance(remembered, list) or len(remembered) < 2:
        return False
    if remembered[0] != str(user.pk):
        return False
    if remembered[1] == visitor_id:
        return True
    if conf.ATTRIBUTION != "last":
        # First touch: once linked, the user keeps its ID whatever this session sends.
        return True
    when = remembered[2] if len(remembered) > 2 else 0
    return isinstance(when, int | float) and time.time() - when < RELINK_INTERVAL
