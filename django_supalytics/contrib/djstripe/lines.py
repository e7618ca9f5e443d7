"""The recurring prices of a subscription or an invoice, and what they cost.

A price's cost per period is its unit amount times the quantity; for a tiered price, what its
tiers make of the quantity (from the event, or dj-stripe's stored copy, which has the tiers);
unknown for a metered price, whose usage is billed after the period. Amounts and quantities are
read within bounds (``money.amount``); a negative one makes the total unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from .money import amount

logger = logging.getLogger("django_supalytics.djstripe")

#: Billing periods in a year, to compare a monthly price with a yearly one.
PERIODS_PER_YEAR = {"day": 365, "week": 52, "month": 12, "year": 1}
#: A quantity of this many digits or more is refused (and a negative one).
MAX_QUANTITY_DIGITS = 9

PriceLookup = Callable[[str], Mapping[str, Any] | None]


def no_prices(price_id: str) -> None:
    return None


def stripe_id(value: Any) -> str | None:
    """The ID of a field Stripe sends as an ID or as the expanded object."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        return stripe_id(value.get("id"))
    return None


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _quantity(value: Any) -> int | None:
    """A quantity; 1 when Stripe sends none (a metered price); None, with a warning, when it
    is negative or absurd (such a line's cost is unknown)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return 1
    if not 0 <= value < 10**MAX_QUANTITY_DIGITS:
        logger.warning("Stripe quantity ignored: %s", "negative" if value < 0 else "too large")
        return None
    return value


@dataclass(frozen=True)
class Line:
    """One recurring price and its quantity, from a subscription item or an invoice line."""

    price: str | None
    name: str | None
    unit_amount: Decimal | None  # in the currency's smallest unit; None for a tiered price
    quantity: int
    currency: str | None
    interval: str | None
    interval_count: int
    #: What the line costs per period (smallest unit); None when unknown: a metered price
    #: (billed for usage after the period), tiers not known, a negative or absurd amount.
    cost: Decimal | None = None
    #: A negative amount or quantity: the lines' total is unknown.
    invalid: bool = False


def _tiered_cost(tiers: Any, mode: Any, quantity: int) -> Decimal | None:
    """A tiered price's cost for ``quantity`` units, as Stripe computes it: ``graduated``, each
    tier's units at its rate (plus its flat amount once used); ``volume``, every unit at the
    rate of the tier the quantity falls in (plus that tier's flat amount)."""
    if not isinstance(tiers, list) or not tiers or mode not in ("graduated", "volume"):
        return None
    cost, below = Decimal(0), 0
    for tier in tiers:
        tier = as_mapping(tier)
        up_to = tier.get("up_to")
        unit = amount(tier.get("unit_amount_decimal"), "tier unit_amount")
        unit = amount(tier.get("unit_amount"), "tier unit_amount") if unit is None else unit
        flat = amount(tier.get("flat_amount_decimal"), "tier flat_amount")
        flat = amount(tier.get("flat_amount"), "tier flat_amount") if flat is None else flat
        unit, flat = unit or Decimal(0), flat or Decimal(0)
        if unit < 0 or flat < 0 or not (up_to is None or isinstance(up_to, int)):
            return None
        top = quantity if up_to is None else min(quantity, up_to)
        if mode == "volume":
            if up_to is None or quantity <= up_to:
                return unit * quantity + flat if quantity else Decimal(0)
            continue
        if top > below:
            cost += unit * (top - below) + flat
        if up_to is None or quantity <= up_to:
            return cost
        below = up_to
    return None


def price_line(price: Any, quantity: Any, prices: PriceLookup = no_prices) -> Line:
    """A ``Line`` from a Price or (older API) Plan object, or a price ID."""
    if isinstance(price, str):
        price = prices(price) or {"id": price}
    price = as_mapping(price)
    if price.get("billing_scheme") == "tiered" and "tiers" not in price and stripe_id(price):
        price = {**price, **as_mapping(prices(str(stripe_id(price))))}  # dj-stripe's has the tiers
    recurring = as_mapping(price.get("recurring"))
    if price.get("object") == "plan" or ("interval" in price and not recurring):
        interval, count = price.get("interval"), price.get("interval_count")
        usage_type = price.get("usage_type")
        unit = amount(price.get("amount_decimal"), "amount_decimal")
        unit = amount(price.get("amount"), "amount") if unit is None else unit
    else:
        interval, count = recurring.get("interval"), recurring.get("interval_count")
        usage_type = recurring.get("usage_type")
        unit = amount(price.get("unit_amount_decimal"), "unit_amount_decimal")
        unit = amount(price.get("unit_amount"), "unit_amount") if unit is None else unit
    number = _quantity(quantity)
    invalid = number is None or (unit is not None and unit < 0)
    if unit is not None and unit < 0:
        logger.warning("Stripe unit amount ignored: negative")
    cost = None
    if not invalid and usage_type != "metered":
        assert number is not None
        if price.get("billing_scheme") == "tiered":
            cost = _tiered_cost(price.get("tiers"), price.get("tiers_mode"), number)
            unit = None
        elif unit is not None:
            cost = unit * number
    name = price.get("lookup_key") or price.get("nickname") or stripe_id(price)
    return Line(
        price=stripe_id(price),
        name=str(name) if name else None,
        unit_amount=None if invalid or usage_type == "metered" else unit,
        quantity=number if number is not None else 0,
        currency=str(price["currency"]).lower() if price.get("currency") else None,
        interval=str(interval) if interval else None,
        interval_count=count if isinstance(count, int) and count > 0 else 1,
        cost=cost,
        invalid=invalid,
    )


def subscription_lines(
    subscription: Mapping[str, Any], prices: PriceLookup = no_prices
) -> list[Line]:
    """The subscription's items (or, in older API versions, its single plan)."""
    items = as_mapping(subscription.get("items")).get("data") or []
    lines = [
        price_line(item.get("price") or item.get("plan"), item.get("quantity"), prices)
        for item in items
        if isinstance(item, Mapping)
    ]
    if not lines and subscription.get("plan"):
        lines = [price_line(subscription["plan"], subscription.get("quantity"), prices)]
    return lines


def total(lines: list[Line]) -> Decimal | None:
    """What the lines cost per billing period; None when no line has a known cost, or one is
    invalid (a negative amount or quantity). A metered line adds nothing: its usage is billed
    after the period."""
    if any(line.invalid for line in lines):
        return None
    costs = [line.cost for line in lines if line.cost is not None]
    return sum(costs, Decimal(0)) if costs else None


def per_year(lines: list[Line]) -> Fraction | None:
    """The lines' cost over a year, so that 29 a month and 290 a year compare."""
    cost = total(lines)
    if cost is None or not lines or lines[0].interval not in PERIODS_PER_YEAR:
        return None
    first = lines[0]
    return Fraction(cost) * PERIODS_PER_YEAR[str(first.interval)] / first.interval_count
