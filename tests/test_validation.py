from decimal import Decimal

import pytest

from django_supalytics import InvalidEvent
from django_supalytics.validation import (
    validate_metadata,
    validate_name,
    validate_payload,
    validate_visitor_id,
)


@pytest.mark.parametrize("name", ["a", "subscription_created", "x-1_2", "a" * 64, "0"])
def test_valid_names_pass(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "empty"),
        ("a" * 65, "at most 64"),
        ("Upper", "lowercase"),
        ("with space", "lowercase"),
        ("dot.ted", "lowercase"),
        ("émoji", "lowercase"),
        (None, "string"),
        (12, "string"),
    ],
)
def test_invalid_names_name_the_field_and_rule(name, rule):
    with pytest.raises(InvalidEvent) as info:
        validate_name(name)
    assert info.value.field == "name"
    assert info.value.code == "invalid_name"
    assert rule in str(info.value)


def test_invalid_event_is_a_value_error():
    with pytest.raises(ValueError, match="name"):
        validate_name("BAD")


@pytest.mark.parametrize("vid", ["abc123", "a" * 128, "!~", "0f3e-4b1c"])
def test_valid_visitor_ids_pass(vid):
    assert validate_visitor_id(vid) == vid


@pytest.mark.parametrize(
    "vid", ["", "a" * 129, "has space", "tab\t", "nl\n", "nul\x00", "é", None, 123]
)
def test_invalid_visitor_ids_are_refused(vid):
    with pytest.raises(InvalidEvent) as info:
        validate_visitor_id(vid)
    assert info.value.field == "visitor_id"


def test_metadata_allows_ten_keys_and_refuses_eleven():
    ten = {f"k{i}": i for i in range(10)}
    assert validate_metadata(ten) == ten
    with pytest.raises(InvalidEvent, match="11 keys; at most 10"):
        validate_metadata({f"k{i}": i for i in range(11)})


def test_metadata_value_length_limit_is_255():
    assert validate_metadata({"s": "x" * 255})
    with pytest.raises(InvalidEvent, match="256 characters"):
        validate_metadata({"s": "x" * 256})


def test_metadata_numbers_count_by_their_json_text():
    assert validate_metadata({"n": 10**254})  # 255 digits
    with pytest.raises(InvalidEvent, match="256 characters"):
        validate_metadata({"n": 10**255})


@pytest.mark.parametrize("value", ["pro", 29, 29.5, True, False, 0])
def test_metadata_scalar_types_pass(value):
    assert validate_metadata({"v": value}) == {"v": value}


@pytest.mark.parametrize("value", [None, [1], {"a": 1}, (1,), b"x", float("nan"), float("inf")])
def test_metadata_other_values_are_refused(value):
    with pytest.raises(InvalidEvent) as info:
        validate_metadata({"v": value})
    assert info.value.field == "metadata"


@pytest.mark.parametrize("key", ["", "k" * 65, 1])
def test_metadata_bad_keys_are_refused(key):
    with pytest.raises(InvalidEvent, match="key"):
        validate_metadata({key: "x"})


def test_metadata_key_of_64_chars_passes():
    assert validate_metadata({"k" * 64: 1})


def test_metadata_must_be_an_object():
    with pytest.raises(InvalidEvent, match="object"):
        validate_metadata([("a", 1)])


def test_payload_unknown_field_is_named():
    with pytest.raises(InvalidEvent) as info:
        validate_payload({"name": "a", "timestamp": 1})
    assert (info.value.code, info.value.field) == ("unknown_field", "timestamp")


def test_payload_requires_name():
    with pytest.raises(InvalidEvent) as info:
        validate_payload({"metadata": {}})
    assert info.value.code == "invalid_name"


def test_payload_null_visitor_id_is_refused():
    with pytest.raises(InvalidEvent) as info:
        validate_payload({"name": "a", "visitor_id": None})
    assert info.value.code == "invalid_visitor_id"


def test_payload_not_an_object_is_invalid_json():
    with pytest.raises(InvalidEvent) as info:
        validate_payload(["name"])
    assert info.value.code == "invalid_json"


def test_a_decimal_is_kept_with_its_exact_digits():
    from django_supalytics.validation import ExactNumber

    clean = validate_metadata({"price": Decimal("29.90"), "seats": Decimal("30"), "n": 2})
    assert clean == {"price": 29.9, "seats": 30, "n": 2}
    assert isinstance(clean["price"], ExactNumber) and clean["price"].text == "29.90"
    assert type(clean["seats"]) is int


@pytest.mark.parametrize(
    ("value", "length"),
    [
        (1e300, 301),  # jsonb gives back 1 and 300 zeros
        (-1.5e254, 256),
        (5e-324, 326),  # 0.000...5
        (Decimal("1E+300"), 301),
        (Decimal("-0." + "0" * 254 + "1"), 258),
        (Decimal("1E+999999"), "over 1000"),  # refused before it is written out
    ],
)
def test_a_number_the_database_gives_back_too_long_is_refused(value, length):
    with pytest.raises(InvalidEvent, match=f"value of 'amount' is {length} characters") as info:
        validate_metadata({"amount": value}, stored=True)
    assert info.value.field == "metadata"


def test_a_number_the_database_gives_back_within_the_limit_passes():
    assert validate_metadata({"a": 1e253, "b": 1e-253, "c": Decimal("1E+254")}, stored=True)


def test_the_apis_rule_counts_a_float_by_its_json_text():
    """The receiver (the API's rule) takes 1e300 as sent: six characters of JSON text; only the
    outbox, whose database writes it out in full, refuses it (``stored``, at ``track()``)."""
    assert validate_metadata({"amount": 1e300}) == {"amount": 1e300}
    assert validate_metadata({"amount": 1.7976931348623157e308}) == {
        "amount": 1.7976931348623157e308
    }


@pytest.mark.parametrize("text", ["NaN", "-Infinity", "sNaN"])
def test_a_decimal_that_is_not_finite_is_refused(text):
    with pytest.raises(InvalidEvent, match="must be a finite number") as info:
        validate_metadata({"amount": Decimal(text)})
    assert info.value.field == "metadata"


def test_the_metadata_encoder_writes_exact_digits_and_the_decoder_keeps_them():
    import json

    from django_supalytics.validation import ExactNumber, MetadataDecoder, MetadataEncoder

    clean = validate_metadata({"price": Decimal("29.90"), "ratio": 0.1, "tiny": Decimal("1E-7")})
    text = json.dumps(clean, cls=MetadataEncoder)
    assert text == '{"price": 29.90, "ratio": 0.1, "tiny": 0.0000001}'
    back = json.loads(text, cls=MetadataDecoder)
    assert back == clean and type(back["ratio"]) is float
    assert [back["price"].text, back["tiny"].text] == ["29.90", "0.0000001"]
    assert json.dumps(back) == '{"price": 29.9, "ratio": 0.1, "tiny": 1e-07}'  # still a float
    assert isinstance(json.loads("[0.0000001]", cls=MetadataDecoder)[0], ExactNumber)
