"""The rules of ``POST /v1/events``, shared by ``track()`` and the mock receiver.

Documented by the vendor: the name pattern and length, at most 10 metadata keys, values at most
255 characters. The rest (value types, key length, visitor ID shape) is the project's contract,
written in ``docs/api-contract.md``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, TypeAlias

from django.core.exceptions import ValidationError

from .exceptions import InvalidEvent

MetadataValue: TypeAlias = str | int | float | bool
Metadata: TypeAlias = dict[str, MetadataValue]

NAME_RE = re.compile(r"[a-z0-9_-]{1,64}")
NAME_MAX_LENGTH = 64
VISITOR_ID_MAX_LENGTH = 128
METADATA_MAX_KEYS = 10
METADATA_KEY_MAX_LENGTH = 64
METADATA_VALUE_MAX_LENGTH = 255
#: The mock receiver refuses a longer ``Idempotency-Key`` rather than cut it (OURS).
IDEMPOTENCY_KEY_MAX_LENGTH = 255
BODY_MAX_BYTES = 16 * 1024
ALLOWED_FIELDS = frozenset({"name", "visitor_id", "metadata"})


def _text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored or sent as JSON text, or None.

    NUL is refused by PostgreSQL's ``jsonb`` and text columns; a lone surrogate cannot be
    encoded as UTF-8 at all. Both would fail later (in the caller's transaction, or at the
    receiver), so they are refused here, where the error can name the field.
    """
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (no lone surrogates)"
    return None


def validate_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidEvent("name", f"must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidEvent("name", "must not be empty")
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidEvent("name", f"is {len(name)} characters; at most {NAME_MAX_LENGTH}")
    if not NAME_RE.fullmatch(name):
        raise InvalidEvent(
            "name", "may hold only lowercase letters, digits, underscores and hyphens"
        )
    return name


def is_valid_visitor_id(value: object) -> bool:
    """True for 1 to 128 printable ASCII characters without spaces."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= VISITOR_ID_MAX_LENGTH
        and all("!" <= ch <= "~" for ch in value)
    )


def validate_visitor_id(visitor_id: object) -> str:
    if not isinstance(visitor_id, str):
        raise InvalidEvent("visitor_id", f"must be a string, not {type(visitor_id).__name__}")
    if not visitor_id:
        raise InvalidEvent("visitor_id", "must not be empty; omit it when there is none")
    if len(visitor_id) > VISITOR_ID_MAX_LENGTH:
        raise InvalidEvent(
            "visitor_id",
            f"is {len(visitor_id)} characters; at most {VISITOR_ID_MAX_LENGTH}",
        )
    if not is_valid_visitor_id(visitor_id):
        raise InvalidEvent("visitor_id", "may hold only printable ASCII characters without spaces")
    return visitor_id


def visitor_id_validator(value: object) -> None:
    """A model field validator: the visitor ID rules, as a ``ValidationError``."""
    try:
        validate_visitor_id(value)
    except InvalidEvent as exc:
        raise ValidationError(f"A visitor ID {exc.message}.", code="invalid_visitor_id") from None


class ExactNumber(float):
    """A number kept with its exact digits: ``text`` is its JSON text, as ``Decimal("29.90")``
    gives ``"29.90"``. A ``float`` everywhere else (it compares, hashes and adds as one), so
    code that reads ``metadata`` or ``json.dumps`` it keeps working; ``MetadataEncoder``
    writes ``text`` itself."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> ExactNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __reduce__(self) -> tuple[type[ExactNumber], tuple[str]]:
        return (ExactNumber, (self.text,))

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


#: Past this exponent or this many digits a number is refused before it is written out (the
#: text of ``Decimal("1e999999")`` would take a million characters to reach the same answer).
_DIGITS_MAX = 1000


def _number_text(value: Decimal) -> str | None:
    """A finite ``Decimal``'s JSON text as PostgreSQL's ``jsonb`` gives it back (``numeric``:
    every digit, no exponent: ``1e300`` is 301 digits), or None when that is surely too long."""
    digits, exponent = value.as_tuple()[1:]
    assert isinstance(exponent, int)
    if abs(exponent) > _DIGITS_MAX or len(digits) > _DIGITS_MAX:
        return None
    return format(value, "f")


def _exact(key: str, value: Decimal) -> int | ExactNumber:
    """A ``Decimal`` as a metadata value: an ``int`` when it has no fraction digits, else an
    ``ExactNumber`` with the digits it has (``29.90`` stays ``29.90``)."""
    if not value.is_finite():
        raise InvalidEvent("metadata", f"value of {key!r} must be a finite number")
    text = _number_text(value)
    if text is None or len(text) > METADATA_VALUE_MAX_LENGTH:
        raise InvalidEvent(
            "metadata",
            f"value of {key!r} is {len(text) if text else 'over 1000'} characters as the "
            f"database gives it back; at most {METADATA_VALUE_MAX_LENGTH}",
        )
    exponent = value.as_tuple()[2]
    return int(value) if isinstance(exponent, int) and exponent >= 0 else ExactNumber(text)


def _value_length(value: MetadataValue) -> int:
    # A number or boolean counts by the length of its JSON text ("true", "29", "1.5").
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1000:
        # Over 300 digits, and too long for Python to turn into text without a limit.
        return METADATA_VALUE_MAX_LENGTH + 1
    return len(json.dumps(value))


def validate_metadata(metadata: object, stored: bool = False) -> Metadata:
    """The metadata as the API accepts it; ``stored``: also as the outbox gives it back (a
    float whose digits PostgreSQL's jsonb writes out past the limit is refused: ``track()``)."""
    if not isinstance(metadata, Mapping):
        raise InvalidEvent("metadata", f"must be an object, not {type(metadata).__name__}")
    if len(metadata) > METADATA_MAX_KEYS:
        raise InvalidEvent(
            "metadata",
            f"has {len(metadata)} keys; at most {METADATA_MAX_KEYS} are allowed",
        )
    clean: Metadata = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise InvalidEvent("metadata", f"key {key!r} must be a non-empty string")
        problem = _text_problem(key)
        if problem:
            raise InvalidEvent("metadata", f"key {key[:20]!a}... {problem}")
        if len(key) > METADATA_KEY_MAX_LENGTH:
            raise InvalidEvent(
                "metadata",
                f"key {key[:20]!r}... is {len(key)} characters; at most {METADATA_KEY_MAX_LENGTH}",
            )
        if isinstance(value, ExactNumber):
            value = Decimal(value.text)
        if isinstance(value, Decimal):
            clean[key] = _exact(key, value)
            continue
        if value is None or not isinstance(value, str | int | float | bool):
            raise InvalidEvent(
                "metadata",
                f"value of {key!r} must be a string, number or boolean, not {type(value).__name__}",
            )
        if isinstance(value, str) and (problem := _text_problem(value)):
            raise InvalidEvent("metadata", f"value of {key!r} {problem}")
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            raise InvalidEvent("metadata", f"value of {key!r} must be a finite number")
        if stored and isinstance(value, float):
            _exact(key, Decimal(repr(value)))  # 1e300 comes back from jsonb as 301 digits
        length = _value_length(value)
        if length > METADATA_VALUE_MAX_LENGTH:
            raise InvalidEvent(
                "metadata",
                f"value of {key!r} is {length} characters; at most {METADATA_VALUE_MAX_LENGTH}",
            )
        clean[key] = value
    return clean


def validate_payload(payload: Any) -> dict[str, Any]:
    """Validate a whole request body as the API does; return the body to send."""
    if not isinstance(payload, dict):
        raise InvalidEvent("body", "must be a JSON object", code="invalid_json")
    for key in payload:
        if key not in ALLOWED_FIELDS:
            raise InvalidEvent(str(key), "is not a field of an event", code="unknown_field")
    if "name" not in payload:
        raise InvalidEvent("name", "is required")
    body: dict[str, Any] = {"name": validate_name(payload["name"])}
    if "visitor_id" in payload:
        body["visitor_id"] = validate_visitor_id(payload["visitor_id"])
    if "metadata" in payload:
        body["metadata"] = validate_metadata(payload["metadata"])
    return body


class MetadataEncoder(json.JSONEncoder):
    """JSON with every ``ExactNumber`` written as its exact digits (``29.90``, not ``29.9``):
    the metadata column's encoder, and the client's for the request body."""

    def iterencode(self, o: Any, _one_shot: bool = False) -> Iterator[str]:
        texts: dict[str, str] = {}
        marked = _mark(o, texts, uuid.uuid4().hex)
        for chunk in super().iterencode(marked, _one_shot):
            for mark, text in texts.items():
                chunk = chunk.replace(f'"{mark}"', text)
            yield chunk


def _mark(value: Any, texts: dict[str, str], salt: str) -> Any:
    # Each ExactNumber becomes a string no data holds, replaced by its digits once written.
    if isinstance(value, ExactNumber):
        mark = f"exact-number-{salt}-{len(texts)}"
        texts[mark] = value.text
        return mark
    if isinstance(value, dict):
        return {key: _mark(item, texts, salt) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_mark(item, texts, salt) for item in value]
    return value


def _parse_float(text: str) -> float:
    number = float(text)
    return number if repr(number) == text else ExactNumber(text)


class MetadataDecoder(json.JSONDecoder):
    """JSON whose numbers keep their digits: one a ``float`` would change (``29.90``, the
    ``0.0000001`` PostgreSQL gives back for ``1e-07``) is read as an ``ExactNumber``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parse_float", _parse_float)
        super().__init__(*args, **kwargs)
