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
