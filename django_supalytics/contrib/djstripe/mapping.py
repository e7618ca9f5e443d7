"""What a Stripe event means for analytics: what happened, and the metadata that describes it.

Pure functions of an event's ``data`` (``{"object": ..., "previous_attributes": ...}``) as
Stripe documents it: the current API's shapes (an invoice's subscription under
``parent.subscription_details``, a line's price under ``pricing.price_details``) and the older
ones (``invoice.subscription``, ``line.price``, ``subscription.plan``). Nothing here reads the
database or the network; a price known only by its ID is looked up with ``prices``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from ...validation import METADATA_VALUE_MAX_LENGTH, Metadata
from .lines import (
    Line,
    PriceLookup,
    as_mapping,
    no_prices,
    per_year,
    price_line,
    stripe_id,
    subscription_lines,
)
from .lines import total as _total
from .money import THREE_DECIMAL_CURRENCIES, ZERO_DECIMAL_CURRENCIES, amount, major_units

__all__ = [
    "THREE_DECIMAL_CURRENCIES",
    "ZERO_DECIMAL_CURRENCIES",
    "Line",
    "amount",
    "major_units",
    "stripe_id",
    "subscription_lines",
]

logger = logging.getLogger("django_supalytics.djstripe")

#: The metadata key on a Stripe object that carries the visitor ID (Stripe Checkout's
#: attribution, documented by Supalytics).
VISITOR_ID_KEY = "supalytics_visitor_id"

#: ``(kind, metadata)``: a key of ``SUPALYTICS_DJSTRIPE["EVENTS"]`` and what describes it.
Occurrence = tuple[str, Metadata]


def _clean(metadata: Mapping[str, Any]) -> Metadata:
    """Without empty values, and every string within the API's length."""
    clean: Metadata = {}
    for key, value in metadata.items():
        if value is None or value == "":
            continue
        if isinstance(value, str):
            value = value[:METADATA_VALUE_MAX_LENGTH]
        clean[key] = value
    return clean


def _describe(lines: list[Line], currency: Any, cost: Decimal | None) -> dict[str, Any]:
    first = lines[0] if lines else None
    currency = str(currency).lower() if currency else (first.currency if first else None)
    described: dict[str, Any] = {
        "plan": first.name if first else None,
        "price": first.price if first else None,
        "amount": major_units(cost, currency) if cost is not None and currency else None,
        "currency": currency,
    }
    if first and first.interval:
        described["interval"] = first.interval
        if first.interval_count != 1:
            described["interval_count"] = first.interval_count
    return described


def _subscription_metadata(subscription: Mapping[str, Any], lines: list[Line]) -> dict[str, Any]:
    return {
        "subscription": stripe_id(subscription),
        **_describe(lines, subscription.get("currency"), _total(lines)),
    }


def _cancellation(subscription: Mapping[str, Any], when: str) -> dict[str, Any]:
    details = as_mapping(subscription.get("cancellation_details"))
    return {"cancel": when, "reason": details.get("reason"), "feedback": details.get("feedback")}


def _cancel_scheduled(subscription: Mapping[str, Any]) -> bool:
    return bool(subscription.get("cancel_at_period_end")) or bool(subscription.get("cancel_at"))


def _previous_lines(
    subscription: Mapping[str, Any], previous: Mapping[str, Any], prices: PriceLookup
) -> list[Line] | None:
    """The items before the update, when it changed them; else None."""
    if "items" in previous:
        return subscription_lines({"items": previous["items"]}, prices)
    if "plan" in previous or "quantity" in previous:
        return subscription_lines(
            {
                "plan": previous.get("plan", subscription.get("plan")),
                "quantity": previous.get("quantity", subscription.get("quantity")),
            },
            prices,
        )
    return None


def subscription_created(
    data: Mapping[str, Any], prices: PriceLookup = no_prices
) -> list[Occurrence]:
    subscription = as_mapping(data.get("object"))
    metadata = _subscription_metadata(subscription, subscription_lines(subscription, prices))
    metadata["status"] = subscription.get("status")
    return [("created", _clean(metadata))]


def subscription_updated(
    data: Mapping[str, Any], prices: PriceLookup = no_prices
) -> list[Occurrence]:
    """A change of price or quantity that costs more or less a year; a cancellation scheduled
    (``cancel_at_period_end`` or ``cancel_at`` set); a scheduled cancellation withdrawn."""
    subscription = as_mapping(data.get("object"))
    previous = as_mapping(data.get("previous_attributes"))
    lines = subscription_lines(subscription, prices)
    occurrences: list[Occurrence] = []
    before = _previous_lines(subscription, previous, prices)
    if before is not None:
        old, new = per_year(before), per_year(lines)
        if old is not None and new is not None and old != new:
            metadata = _subscription_metadata(subscription, lines)
            old_described = _describe(before, subscription.get("currency"), _total(before))
            metadata["previous_plan"] = old_described["plan"]
            metadata["previous_amount"] = old_described["amount"]
            occurrences.append(("upgraded" if new > old else "downgraded", _clean(metadata)))
    was_scheduled = _cancel_scheduled({**subscription, **previous})
    if _cancel_scheduled(subscription) and not was_scheduled:
        when = "at_period_end" if subscription.get("cancel_at_period_end") else "at_date"
        metadata = {
            **_subscription_metadata(subscription, lines),
            **_cancellation(subscription, when),
        }
        occurrences.append(("cancelled", _clean(metadata)))
    elif (
        was_scheduled
        and not _cancel_scheduled(subscription)
        and subscription.get("status") != "canceled"
    ):
        occurrences.append(("reactivated", _clean(_subscription_metadata(subscription, lines))))
    return occurrences


def subscription_deleted(
    data: Mapping[str, Any], prices: PriceLookup = no_prices
) -> list[Occurrence]:
    """A cancellation that takes effect now. The end of one that was scheduled is not counted
    again: its ``subscription_cancelled`` was tracked when it was scheduled."""
    subscription = as_mapping(data.get("object"))
    if _cancel_scheduled(subscription):
        return []
    metadata = {
        **_subscription_metadata(subscription, subscription_lines(subscription, prices)),
        **_cancellation(subscription, "immediately"),
    }
    return [("cancelled", _clean(metadata))]


def invoice_subscription(invoice: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
    """The ID of the invoice's subscription and that subscription's metadata, when known."""
    details = as_mapping(
        as_mapping(invoice.get("parent")).get("subscription_details")
    ) or as_mapping(invoice.get("subscription_details"))
    subscription = stripe_id(details.get("subscription")) or stripe_id(invoice.get("subscription"))
    return subscription, as_mapping(details.get("metadata"))


def _is_proration(line: Mapping[str, Any]) -> bool:
    """A proration line: ``parent.subscription_item_details.proration`` (current API) or
    ``proration`` (older ones)."""
    details = as_mapping(as_mapping(line.get("parent")).get("subscription_item_details"))
    return details.get("proration") is True or line.get("proration") is True


def _is_credit(line: Mapping[str, Any]) -> bool:
    line_amount = amount(line.get("amount"), "line amount")
    return line_amount is not None and line_amount < 0


def _paid_for(invoice: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The lines that say what the invoice pays for, best first: its subscription lines that
    are no proration; else the prorations charged (``Remaining time on ...``); else its other
    lines. A credit (``Unused time on ...``, the old price after a change) never is."""
    lines = [
        line
        for line in as_mapping(invoice.get("lines")).get("data") or []
        if isinstance(line, Mapping) and not _is_credit(line)
    ]
    recurring = [
        line
        for line in lines
        if as_mapping(line.get("parent")).get("type") == "subscription_item_details"
        or line.get("type") == "subscription"
    ]
    return (
        [line for line in recurring if not _is_proration(line)]
        or [line for line in lines if _is_proration(line)]
        or lines
    )


def _invoice_lines(invoice: Mapping[str, Any], prices: PriceLookup) -> list[Line]:
    result = []
    for line in _paid_for(invoice):
        price = line.get("price") or as_mapping(
            as_mapping(line.get("pricing")).get("price_details")
        ).get("price")
        result.append(price_line(price or line.get("plan"), line.get("quantity"), prices))
    return result


def _invoice_metadata(
    invoice: Mapping[str, Any], invoice_amount: Decimal, prices: PriceLookup
) -> dict[str, Any]:
    lines = _invoice_lines(invoice, prices)
    return {
        "invoice": stripe_id(invoice),
        "subscription": invoice_subscription(invoice)[0],
        **_describe(lines, invoice.get("currency"), invoice_amount),
        "billing_reason": invoice.get("billing_reason"),
    }


def _invoice_amount(invoice: Mapping[str, Any], field: str) -> Decimal | None:
    """The invoice's ``field``; None (logged) when it is negative: no payment, nor one due."""
    value = amount(invoice.get(field), field)
    if value is not None and value < 0:
        logger.warning("Stripe invoice %s ignored: negative %s", stripe_id(invoice), field)
        return None
    return value


def invoice_paid(data: Mapping[str, Any], prices: PriceLookup = no_prices) -> list[Occurrence]:
    """A payment: ``amount_paid``. An invoice paid with nothing (a trial's first one, one
    covered by a coupon) is no payment and is not counted; nor is a negative or absurd amount
    (a refund or a credit is no payment)."""
    invoice = as_mapping(data.get("object"))
    paid = _invoice_amount(invoice, "amount_paid")
    if not paid:
        return []
    return [("payment_succeeded", _clean(_invoice_metadata(invoice, paid, prices)))]


def invoice_payment_failed(
    data: Mapping[str, Any], prices: PriceLookup = no_prices
) -> list[Occurrence]:
    """A failed attempt to collect ``amount_due``; ``attempt_count`` counts them. Not counted
    when nothing positive was due (a negative or absurd ``amount_due``, or 0)."""
    invoice = as_mapping(data.get("object"))
    due = _invoice_amount(invoice, "amount_due")
    if not due:
        return []
    metadata = _invoice_metadata(invoice, due, prices)
    metadata["attempt_count"] = invoice.get("attempt_count")
    return [("payment_failed", _clean(metadata))]


#: The Stripe event types handled, and what each one means.
MAPPERS: dict[str, Callable[[Mapping[str, Any], PriceLookup], list[Occurrence]]] = {
    "customer.subscription.created": subscription_created,
    "customer.subscription.updated": subscription_updated,
    "customer.subscription.deleted": subscription_deleted,
    "invoice.paid": invoice_paid,
    "invoice.payment_failed": invoice_payment_failed,
}


def visitor_id_sources(event_type: str, stripe_object: Mapping[str, Any]) -> list[Any]:
    """The values that may carry the visitor ID, best first: the object's own metadata, then,
    for an invoice, its subscription's (where Stripe Checkout's ``subscription_data`` put it)."""
    sources = [as_mapping(stripe_object.get("metadata")).get(VISITOR_ID_KEY)]
    if event_type.startswith("invoice."):
        sources.append(invoice_subscription(stripe_object)[1].get(VISITOR_ID_KEY))
    return [value for value in sources if value is not None]
