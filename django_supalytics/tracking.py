"""``track()``: validate an event and record it in the caller's transaction."""

from __future__ import annotations

import json
import warnings
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections, router

from .conf import conf
from .dispatch import schedule
from .exceptions import InvalidEvent
from .forgetting import suppressed_among
from .identity import get_visitor_id, is_authenticated, link_visitor
from .models import OutboxEvent
from .validation import (
    BODY_MAX_BYTES,
    MetadataEncoder,
    validate_metadata,
    validate_name,
    validate_visitor_id,
)


def resolve_visitor_id(visitor_id: str | None, user: Any, request: Any) -> str | None:
    """The explicit ID, else the request's (from the middleware), else the user's stored one."""
    if visitor_id is not None:
        return validate_visitor_id(visitor_id)
    state = getattr(request, "supalytics", None) if request is not None else None
    if state is not None and state.visitor_id:
        return str(state.visitor_id)
    return get_visitor_id(user)


def build_event(
    name: str,
    *,
    visitor_id: str | None = None,
    user: Any = None,
    request: Any = None,
    metadata: dict[str, Any] | None = None,
) -> OutboxEvent:
    """A validated, unsaved ``OutboxEvent``; raises ``InvalidEvent`` naming the field."""
    name = validate_name(name)
    clean_metadata = {} if metadata is None else validate_metadata(metadata, stored=True)
    resolved = resolve_visitor_id(visitor_id, user, request)
    event = OutboxEvent(
        name=name,
        visitor_id=resolved or "",
        metadata=clean_metadata,
        user=user if is_authenticated(user) else None,
    )
    size = len(json.dumps(event.payload, cls=MetadataEncoder).encode())
    if size > BODY_MAX_BYTES:
        raise InvalidEvent(
            "metadata", f"makes the request body {size} bytes; at most {BODY_MAX_BYTES}"
        )
    return event


def track(
    name: str,
    *,
    visitor_id: str | None = None,
    user: Any = None,
    request: Any = None,
    metadata: dict[str, Any] | None = None,
    using: str | None = None,
    bulk: bool = False,
) -> OutboxEvent:
    """Record an event for delivery once the current transaction commits.

    Raises ``InvalidEvent`` (a ``ValueError``) naming the field, before anything is written.
    The visitor ID is ``visitor_id``, else the request's, else the one stored for ``user``
    (``request.user`` when ``user`` is not given). ``bulk=True`` (a replay, an import, a nightly
    job) puts the row in the bulk lane: sent with what live events leave of the rate limit.
    Returns the new ``OutboxEvent``; rolled back, it is neither stored nor sent. Never touches
    the network. For a suppressed visitor (``suppress_visitor``, or a request with
    ``Sec-GPC: 1`` under ``HONOR_GPC``) the event has no visitor ID, or with
    ``SUPPRESSION = "drop"`` nothing is written: the event it returns is unsaved (``pk`` None).
    """
    if user is None and request is not None:
        request_user = getattr(request, "user", None)
        user = request_user if is_authenticated(request_user) else None
    event = build_event(name, visitor_id=visitor_id, user=user, request=request, metadata=metadata)
    if not withhold([event], request):
        return event  # unsaved (``pk`` None): nothing is written, nothing is sent
    if bulk:
        event.priority = OutboxEvent.Priority.BULK
    using = using or router.db_for_write(OutboxEvent)
    if not connections[using].in_atomic_block:
        _warn_if_in_another_transaction(using)
    if request is not None and event.visitor_id and event.user and get_visitor_id(user) is None:
        link_visitor(user, event.visitor_id)
    event.save(using=using, force_insert=True)
    schedule(event.pk, using)
    return event


def withhold(events: list[OutboxEvent], request: Any = None) -> list[OutboxEvent]:
    """``SUPPRESSION`` applied to unsaved events, before they are written: the events to write.

    An event of a suppressed visitor, or tracked with a request that objects (``Sec-GPC: 1``
    under ``HONOR_GPC``), loses its visitor ID (so it is never linked to a user either), or with
    ``"drop"`` is left out. One indexed look-up for all of them; none while ``SUPPRESSION`` is
    ``"off"`` (the default), so ``track()`` costs what an INSERT costs. ``track()``,
    ``supalytics_send`` and ``supalytics_backfill`` all pass through here.
    """
    mode = conf.SUPPRESSION
    state = getattr(request, "supalytics", None) if request is not None else None
    if getattr(state, "gpc", False) is True:
        hidden = {event.visitor_id for event in events}
    elif mode == "off":
        return events
    else:
        hidden = suppressed_among(event.visitor_id for event in events)
    kept = []
    for event in events:
        if event.visitor_id in hidden:
            if mode == "drop":
                continue
            event.visitor_id = ""
        kept.append(event)
    return kept


class OutboxNotInTransactionWarning(RuntimeWarning):
    """``track()`` wrote to a database other than the one whose transaction is open."""


def _warn_if_in_another_transaction(using: str) -> None:
    # Only initialized connections: looking must not open one.
    others = [
        connection.alias
        for connection in connections.all(initialized_only=True)
        if connection.alias != using and connection.in_atomic_block
    ]
    if others:
        warnings.warn(
            f"track() wrote to the outbox in database {using!r} outside any transaction there, "
            f"while a transaction is open on {', '.join(map(repr, others))}: the event is "
            "committed now and is sent even if that transaction rolls back. Open the "
            f"transaction on {using!r} too, or pass track(using=...).",
            OutboxNotInTransactionWarning,
            stacklevel=3,
        )


async def atrack(
    name: str,
    *,
    visitor_id: str | None = None,
    user: Any = None,
    request: Any = None,
    metadata: dict[str, Any] | None = None,
    using: str | None = None,
    bulk: bool = False,
) -> OutboxEvent:
    """``track()`` for async code: the same arguments, awaited.

    It runs ``track()`` in Django's sync thread (``sync_to_async(thread_sensitive=True)``, as
    ``QuerySet.acreate`` does). Async code has no transactions, so the row commits at once and
    is handed to Celery then; to tie events to a transaction, run the whole unit of work,
    ``track()`` included, in one sync function under ``sync_to_async``.
    """
    return await sync_to_async(track, thread_sensitive=True)(
        name,
        visitor_id=visitor_id,
        user=user,
        request=request,
        metadata=metadata,
        using=using,
        bulk=bulk,
    )
