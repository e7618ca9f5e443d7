"""Stripe amounts: read within bounds, and converted to the currency's main unit.

An amount comes from a webhook's JSON, which an attacker who has the signing secret (or a bug
upstream) shapes: ``"1e999999"`` is a valid ``Decimal`` whose conversion to ``int`` takes half a
minute of CPU. Every amount is read here, and one out of Stripe's range is refused, with a
warning, before any arithmetic is done on it.
"""

from __future__ import annotations

import logging
from decimal import Decimal, InvalidOperation
from typing import Any

logger = logging.getLogger("django_supalytics.djstripe")

# Stripe's docs, "Supported currencies" (https://docs.stripe.com/currencies, sections
# "Zero-decimal currencies" and "Three-decimal currencies"; checked against the page as archived
# at https://web.archive.org/web/20220618095455/https://stripe.com/en-mt/docs/currencies and the
# current docs.stripe.com/currencies). ISK, HUF, TWD and UGX are "special cases" there: ISK, HUF
# and TWD stay two-decimal in the API (an ISK amount of 100 is 1 kr); UGX is zero-decimal.

#: Stripe's zero-decimal currencies: an amount of 500 JPY is ¥500.
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv"}
    | {"xaf", "xof", "xpf"}
)
#: Stripe's three-decimal currencies: an amount of 5124 KWD is 5.124.
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})

#: The largest amount read, in the smallest unit: below 10**15 (Stripe's own limit is 8 digits
#: for a charge, 12 for a price's ``unit_amount_decimal``).
MAX_AMOUNT_DIGITS = 15
#: At most 12 decimal places, as Stripe documents for ``unit_amount_decimal``.
MAX_DECIMAL_PLACES = 12
#: A longer string is not parsed at all.
MAX_AMOUNT_CHARS = 40


def amount(value: Any, field: str = "amount") -> Decimal | None:
    """``value`` as a ``Decimal`` in Stripe's range; None when absent or not a number, and None
    with a warning when absurd (not finite, ``MAX_AMOUNT_DIGITS`` integer digits or more, more
    than ``MAX_DECIMAL_PLACES`` decimal places). The sign is kept: callers decide on negatives."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):  # its size is known without converting it to text
        if abs(value) < 10**MAX_AMOUNT_DIGITS:
            return Decimal(value)
        return _refused(field, "too large")
    if isinstance(value, float):
        value = repr(value)
    if not isinstance(value, str):
        return None
    if len(value) > MAX_AMOUNT_CHARS:
        return _refused(field, f"longer than {MAX_AMOUNT_CHARS} characters")
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    exponent = number.as_tuple().exponent
    if not number.is_finite() or not isinstance(exponent, int):
        return _refused(field, "not finite")
    if number and number.adjusted() >= MAX_AMOUNT_DIGITS:
        return _refused(field, "too large")
    if exponent < -MAX_DECIMAL_PLACES:
        return _refused(field, f"more than {MAX_DECIMAL_PLACES} decimal places")
    return number


def _refused(field: str, why: str) -> Decimal | None:
    logger.warning("Stripe %s ignored: %s", field, why)
    return None


def decimal_places(currency: str) -> int:
    currency = currency.lower()
    if currency in ZERO_DECIMAL_CURRENCIES:
        return 0
    if currency in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def major_units(minor: Decimal | int, currency: str) -> int | float:
    """An amount in Stripe's smallest unit, in the currency's main unit: 2999 USD is 29.99.
    ``minor`` is one ``amount()`` accepted (or a sum of a few)."""
    value = Decimal(minor).scaleb(-decimal_places(currency))
    if value == value.to_integral_value():
        return int(value)
    return float(value)
