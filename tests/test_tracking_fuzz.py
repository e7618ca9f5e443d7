"""Hostile input to ``track()``: it stores the event or raises ``InvalidEvent``, nothing else.

Runs on the test database (PostgreSQL when it answers), whose ``jsonb`` refuses NUL and lone
surrogates: a value that slipped through validation would raise a ``DataError`` here instead.
"""

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_supalytics import InvalidEvent, track
from django_supalytics.models import OutboxEvent

pytestmark = pytest.mark.django_db

#: Every code point, surrogates and NUL included (``st.text()`` leaves surrogates out).
hostile_text = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
    max_size=80,
) | st.sampled_from(["\x00", "\ud800", "a\udfffb", "ok\x00", "", " ", "\u2028"])
huge_ints = st.integers() | st.sampled_from([10**255, -(10**300), 10**4000, 2**63, -(2**63) - 1])
scalars = st.none() | st.booleans() | huge_ints | st.floats() | hostile_text
deep = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(hostile_text, children),
    max_leaves=30,
)
# Mostly valid around one hostile part, so that the database is reached, not only validation.
names = st.from_regex(r"[a-z0-9_-]{1,64}", fullmatch=True) | hostile_text
visitor_ids = st.none() | st.from_regex(r"[!-~]{1,128}", fullmatch=True) | hostile_text
keys = st.from_regex(r"[a-z]{1,10}", fullmatch=True) | hostile_text
values = hostile_text | huge_ints | st.floats() | st.booleans()
metadata = (
    st.none()
    | st.dictionaries(keys, values, max_size=4)
    | st.dictionaries(keys, values | deep, max_size=12)
    | deep
)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "a\x00b"}, "name"),
        ({"name": "\ud800"}, "name"),
        ({"visitor_id": "abc\x00"}, "visitor_id"),
        ({"visitor_id": "\ud800abc"}, "visitor_id"),
        ({"metadata": {"plan": "pro\x00"}}, "metadata"),
        ({"metadata": {"plan": "\ud800"}}, "metadata"),
        ({"metadata": {"pl\x00an": "pro"}}, "metadata"),
        ({"metadata": {"\udfff": "pro"}}, "metadata"),
        ({"metadata": {"big": 10**5000}}, "metadata"),
    ],
)
def test_nul_surrogates_and_huge_numbers_are_invalid_events(published, kwargs, field):
    kwargs = {"name": "signed_up", **kwargs}
    with transaction.atomic(), pytest.raises(InvalidEvent) as info:
        track(kwargs.pop("name"), **kwargs)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert not OutboxEvent.objects.exists()


TRACK_EXAMPLES = 300


@settings(
    max_examples=TRACK_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=names, visitor_id=visitor_ids, metadata=metadata)
def test_track_stores_or_raises_invalid_event_for_any_input(published, name, visitor_id, metadata):
    try:
        with transaction.atomic():
            event = track(name, visitor_id=visitor_id, metadata=metadata)
    except InvalidEvent as exc:
        field = exc.field
        assert field in ("name", "visitor_id", "metadata")
        return
    stored = OutboxEvent.objects.get(pk=event.pk)
    # Keys, not values: jsonb may print a float's decimal text back as an integer.
    assert (stored.name, stored.visitor_id, set(stored.metadata)) == (
        event.name,
        event.visitor_id,
        set(event.metadata),
    )
