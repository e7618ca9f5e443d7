"""The receivers of dj-stripe's ``WEBHOOK_SIGNALS``: Stripe events in, Supalytics events out.

dj-stripe sends these signals inside the ``transaction.atomic()`` in which it records the Stripe
event, and ``track()`` writes in the current transaction: the events commit, or roll back, with
dj-stripe's processing. A failure of ours is logged and swallowed in a savepoint of its own, so
it never fails or poisons dj-stripe's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import FieldError
from django.db import router, transaction

from ...exceptions import InvalidEvent
from ...models import OutboxEvent
from ...tracking import track
from ...validation import Metadata, is_valid_visitor_id
from . import mapping
from .conf import conf

logger = logging.getLogger("django_supalytics.djstripe")


def on_stripe_event(sender: Any, event: Any, **kwargs: Any) -> None:
    """Track what a dj-stripe ``Event`` means; log, and never raise, when that fails."""
    try:
        with transaction.atomic(using=router.db_for_write(OutboxEvent)):
            track_stripe_event(event)
    except InvalidEvent as exc:
        logger.warning("Stripe event %s (%s) not tracked: %s", event.id, event.type, exc)
    except Exception:
        logger.exception("Stripe event %s (%s) not tracked", event.id, event.type)


def track_stripe_event(event: Any) -> list[OutboxEvent]:
    """Track the events a dj-stripe ``Event`` stands for (often one, sometimes none)."""
    mapper = mapping.MAPPERS.get(event.type)
    if mapper is None:
        return []
    data = event.data if isinstance(event.data, Mapping) else {}
    occurrences = mapper(data, _local_price)
    names = conf.EVENTS
    occurrences = [(kind, metadata) for kind, metadata in occurrences if names.get(kind)]
    if not occurrences:
        return []
    stripe_object = data.get("object") or {}
    user = _subscriber(stripe_object)
    visitor_id = _visitor_id(event, stripe_object)
    return [
        track(
            str(names[kind]),
            visitor_id=visitor_id,
            user=user,
            metadata=_final_metadata(metadata, kind, stripe_object, event),
        )
        for kind, metadata in occurrences
    ]


def _visitor_id(event: Any, stripe_object: Mapping[str, Any]) -> str | None:
    """The first valid ``supalytics_visitor_id`` in the object's metadata; an invalid one is
    skipped (and never stored). None: ``track()`` then uses the one stored for the user."""
    for value in mapping.visitor_id_sources(event.type, stripe_object):
        if is_valid_visitor_id(value):
            return str(value)
        logger.info("Stripe event %s: ignoring an invalid %s", event.id, mapping.VISITOR_ID_KEY)
    return None


def _subscriber(stripe_object: Mapping[str, Any]) -> Any:
    """The user linked to the object's dj-stripe ``Customer`` (``Customer.subscriber``), from
    the database only; None when there is none or it is not a user."""
    from djstripe.models import Customer

    customer_id = mapping.stripe_id(stripe_object.get("customer"))
    if customer_id is None:
        return None
    customer = Customer.objects.filter(id=customer_id).select_related("subscriber").first()
    subscriber = getattr(customer, "subscriber", None)
    return subscriber if isinstance(subscriber, get_user_model()) else None


def _local_price(price_id: str) -> Mapping[str, Any] | None:
    """A price dj-stripe has synced, as Stripe sent it; never fetched from Stripe."""
    from djstripe.models import Price

    try:
        data = Price.objects.filter(id=price_id).values_list("stripe_data", flat=True).first()
    except FieldError:  # a dj-stripe without stripe_data: the price stays known by its ID
        return None
    return data if isinstance(data, Mapping) else None


def _final_metadata(
    metadata: Metadata, kind: str, stripe_object: Mapping[str, Any], event: Any
) -> dict[str, Any]:
    """The metadata after ``SUPALYTICS_DJSTRIPE["METADATA"]``: renamed or dropped keys, or
    whatever the project's function returns (``track()`` validates it)."""
    hook = conf.METADATA
    if hook is None:
        return dict(metadata)
    if isinstance(hook, Mapping):
        renamed: dict[str, Any] = {}
        for key, value in metadata.items():
            new_key = hook.get(key, key)
            if new_key:
                renamed[str(new_key)] = value
        return renamed
    return dict(hook(dict(metadata), kind=kind, stripe_object=stripe_object, event=event))
