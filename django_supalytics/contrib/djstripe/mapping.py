"""What a Stripe event means for analytics: what happened, and the metadata that describes it.

Pure functions of an event's ``data`` (``{"object": ..., "previous_attributes": ...}``) as
Stripe documents it: the current API's shapes (an invoice's subscription under
``parent.subscription_details``, a line's price under ``pricing.price_details``) and the older
ones (``invoice.subscription``, ``line.price``, ``subscription.plan``). Nothing here reads the
database or the network; a price known only by its ID is looked up with ``prices``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from ...validation import METADATA_VALUE_MAX_LENGTH, Metadata

#: The metadata key on a Stripe object that carries the visitor ID (Stripe Checkout's
#: attribution, documented by Supalytics).
VISITOR_ID_KEY = "supalytics_visitor_id"

#: Stripe's zero-decimal currencies: an amount of 500 JPY is ¥500.
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "vnd", "vuv"}
    | {"xaf", "xof", "xpf"}
)
#: Stripe's three-decimal currencies: an amount of 5124 KWD is 5.124.
THREE_DECIMAL_CURRENCIES = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])
#: Billing periods in a year, to compare a monthly price with a yearly one.
PERIODS_PER_YEAR = {"day": 365, "week": 52, "month": 12, "year": 1}

#: ``(kind, metadata)``: a key of ``SUPALYTICS_DJSTRIPE["EVENTS"]`` and what describes it.
Occurrence = tuple[str, Metadata]
PriceLookup = Callable[[str], Mapping[str, Any] | None]


def _no_prices(price_id: str) -> None:
    return None


def stripe_id(value: Any) -> str | None:
    """The ID of a field Stripe sends as an ID or as the expanded object."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        return stripe_id(value.get("id"))
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def major_units(minor: Decimal | int, currency: str) -> int | float:
    """An amount in Stripe's smallest unit, in the currency's main unit: 2999 USD is 29.99."""
    currency = currency.lower()
    if currency in ZERO_DECIMAL_CURRENCIES:
        exponent = 0
    elif currency in THREE_DECIMAL_CURRENCIES:
        exponent = 3
    else:
        exponent = 2
    value = Decimal(minor).scaleb(-exponent)
    if value == value.to_integral_value():
        return int(value)
    return float(value)


@dataclass(frozen=True)
class Line:
    """One recurring price and its quantity, from a subscription item or an invoice line."""

    price: str | None
    name: str | None
    unit_amount: Decimal | None  # in the currency's smallest unit
    quantity: int
    currency: str | None
    interval: str | None
    interval_count: int


def _line(price: Any, quantity: Any, prices: PriceLookup = _no_prices) -> Line:
    """A ``Line`` from a Price or (older API) Plan object, or a price ID."""
    if isinstance(price, str):
        price = prices(price) or {"id": price}
    price = _mapping(price)
    recurring = _mapping(price.get("recurring"))
    if price.get("object") == "plan" or ("interval" in price and not recurring):
        interval, count = price.get("interval"), price.get("interval_count")
        amount = _decimal(price.get("amount_decimal")) or _decimal(price.get("amount"))
    else:
        interval, count = recurring.get("interval"), recurring.get("interval_count")
        amount = _decimal(price.get("unit_amount_decimal"))
        if amount is None:
            amount = _decimal(price.get("unit_amount"))
    name = price.get("lookup_key") or price.get("nickname") or stripe_id(price)
    return Line(
        price=stripe_id(price),
        name=str(name) if name else None,
        unit_amount=amount,
        quantity=quantity if isinstance(quantity, int) and not isinstance(quantity, bool) else 1,
        currency=str(price["currency"]).lower() if price.get("currency") else None,
        interval=str(interval) if interval else None,
        interval_count=count if isinstance(count, int) and count > 0 else 1,
    )


def subscription_lines(subscription: Mapping[str, Any]) -> list[Line]:
    """The subscription's items (or, in older API versions, its single plan)."""
    items = _mapping(subscription.get("items")).get("data") or []
    lines = [
        _line(item.get("price") or item.get("plan"), item.get("quantity"))
        for item in items
        if isinstance(item, Mapping)
    ]
    if not lines and subscription.get("plan"):
        lines = [_line(subscription["plan"], subscription.get("quantity"))]
    return lines


def _total(lines: list[Line]) -> Decimal | None:
    """What the lines cost per billing period; None when no line has a fixed price."""
    amounts = [line.unit_amount * line.quantity for line in lines if line.unit_amount is not None]
    return sum(amounts, Decimal(0)) if amounts else None


def per_year(lines: list[Line]) -> Fraction | None:
    """The lines' cost over a year, so that 29 a month and 290 a year compare."""
    total = _total(lines)
    if total is None or not lines or lines[0].interval not in PERIODS_PER_YEAR:
        return None
    first = lines[0]
    return Fraction(total) * PERIODS_PER_YEAR[str(first.interval)] / first.interval_count


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


def _describe(lines: list[Line], currency: Any, amount: Decimal | None) -> dict[str, Any]:
    first = lines[0] if lines else None
    currency = str(currency).lower() if currency else (first.currency if first else None)
    described: dict[str, Any] = {
        "plan": first.name if first else None,
        "price": first.price if first else None,
        "amount": major_units(amount, currency) if amount is not None and currency else None,
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
    details = _mapping(subscription.get("cancellation_details"))
    return {"cancel": when, "reason": details.get("reason"), "feedback": details.get("feedback")}


def _cancel_scheduled(subscription: Mapping[str, Any]) -> bool:
    return bool(subscription.get("cancel_at_period_end")) or bool(subscription.get("cancel_at"))


def _previous_lines(
    subscription: Mapping[str, Any], previous: Mapping[str, Any]
) -> list[Line] | None:
    """The items before the update, when it changed them; else None."""
    if "items" in previous:
        return subscription_lines({"items": previous["items"]})
    if "plan" in previous or "quantity" in previous:
        return subscription_lines(
            {
                "plan": previous.get("plan", subscription.get("plan")),
                "quantity": previous.get("quantity", subscription.get("quantity")),
            }
        )
    return None


def subscription_created(
    data: Mapping[str, Any], prices: PriceLookup = _no_prices
) -> list[Occurrence]:
    subscription = _mapping(data.get("object"))
    metadata = _subscription_metadata(subscription, subscription_lines(subscription))
    metadata["status"] = subscription.get("status")
    return [("created", _clean(metadata))]


def subscription_updated(
    data: Mapping[str, Any], prices: PriceLookup = _no_prices
) -> list[Occurrence]:
    """A change of price or quantity that costs more or less a year; a cancellation scheduled
    (``cancel_at_period_end`` or ``cancel_at`` set); a scheduled cancellation withdrawn."""
    subscription = _mapping(data.get("object"))
    previous = _mapping(data.get("previous_attributes"))
    lines = subscription_lines(subscription)
    occurrences: list[Occurrence] = []
    before = _previous_lines(subscription, previous)
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
    data: Mapping[str, Any], prices: PriceLookup = _no_prices
) -> list[Occurrence]:
    """A cancellation that takes effect now. The end of one that was scheduled is not counted
    again: its ``subscription_cancelled`` was tracked when it was scheduled."""
    subscription = _mapping(data.get("object"))
    if _cancel_scheduled(subscription):
        return []
    metadata = {
        **_subscription_metadata(subscription, subscription_lines(subscription)),
        **_cancellation(subscription, "immediately"),
    }
    return [("cancelled", _clean(metadata))]


def invoice_subscription(invoice: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
    """The ID of the invoice's subscription and that subscription's metadata, when known."""
    details = _mapping(_mapping(invoice.get("parent")).get("subscription_details")) or _mapping(
        invoice.get("subscription_details")
    )
    subscription = stripe_id(details.get("subscription")) or stripe_id(invoice.get("subscription"))
    return subscription, _mapping(details.get("metadata"))


def _invoice_lines(invoice: Mapping[str, Any], prices: PriceLookup) -> list[Line]:
    """The invoice's subscription lines (all its lines when none is one)."""
    lines = [
        line
        for line in _mapping(invoice.get("lines")).get("data") or []
        if isinstance(line, Mapping)
    ]
    recurring = [
        line
        for line in lines
        if _mapping(line.get("parent")).get("type") == "subscription_item_details"
        or line.get("type") == "subscription"
    ]
    result = []
    for line in recurring or lines:
        price = line.get("price") or _mapping(
            _mapping(line.get("pricing")).get("price_details")
        ).get("price")
        result.append(_line(price or line.get("plan"), line.get("quantity"), prices))
    return result


def _invoice_metadata(
    invoice: Mapping[str, Any], amount_field: str, prices: PriceLookup
) -> dict[str, Any]:
    lines = _invoice_lines(invoice, prices)
    return {
        "invoice": stripe_id(invoice),
        "subscription": invoice_subscription(invoice)[0],
        **_describe(lines, invoice.get("currency"), _decimal(invoice.get(amount_field))),
        "billing_reason": invoice.get("billing_reason"),
    }


def invoice_paid(data: Mapping[str, Any], prices: PriceLookup = _no_prices) -> list[Occurrence]:
    """A payment: ``amount_paid``. An invoice paid with nothing (a trial's first one, one
    covered by a coupon) is no payment and is not counted."""
    invoice = _mapping(data.get("object"))
    if not _decimal(invoice.get("amount_paid")):
        return []
    return [("payment_succeeded", _clean(_invoice_metadata(invoice, "amount_paid", prices)))]


def invoice_payment_failed(
    data: Mapping[str, Any], prices: PriceLookup = _no_prices
) -> list[Occurrence]:
    """A failed attempt to collect ``amount_due``; ``attempt_count`` counts them."""
    invoice = _mapping(data.get("object"))
    metadata = _invoice_metadata(invoice, "amount_due", prices)
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
    sources = [_mapping(stripe_object.get("metadata")).get(VISITOR_ID_KEY)]
    if event_type.startswith("invoice."):
        sources.append(invoice_subscription(stripe_object)[1].get(VISITOR_ID_KEY))
    return [value for value in sources if value is not None]
