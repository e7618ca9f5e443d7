"""Property-based: whatever a client sends, the receiver never answers 5xx, and every 4xx
carries the error envelope with a code from the contract."""

import json

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_supalytics.receiver.openapi import ERROR_CODES

pytestmark = pytest.mark.django_db

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=300)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=70), children, max_size=12)
    ),
    max_leaves=20,
)
# Mostly event-shaped bodies, so that validation is reached and explored, not only parsing.
events = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.from_regex(r"[a-z0-9_-]{0,70}", fullmatch=True), json_values),
        "visitor_id": st.one_of(st.text(max_size=140), json_values),
        "metadata": st.one_of(
            st.dictionaries(st.text(max_size=70), scalars, max_size=12), json_values
        ),
        "timestamp": st.integers(),
    },
)
bodies = st.one_of(
    events.map(lambda b: json.dumps(b).encode()),
    json_values.map(lambda b: json.dumps(b).encode()),
    st.binary(max_size=300),
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "HTTP_AUTHORIZATION": st.sampled_from(
            ["Bearer sly_test_key", "Bearer sly_nope", "Bearer", "Basic x", ""]
        )
        | st.text(max_size=40).filter(lambda s: "\n" not in s and "\r" not in s),
        "HTTP_IDEMPOTENCY_KEY": st.text(max_size=300).filter(lambda s: "\n" not in s),
    },
)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/xml"]
)
methods = st.sampled_from(["post", "post", "post", "get", "put", "delete", "patch"])


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, extra=headers, content_type=content_types, method=methods)
def test_no_input_yields_a_5xx_and_every_4xx_has_the_envelope(
    settings_override, body, extra, content_type, method
):
    client = Client(raise_request_exception=False)
    response = client.generic(
        method.upper(), "/v1/events", data=body, content_type=content_type, **extra
    )
    assert response.status_code < 500, response.content
    if response.status_code >= 400:
        payload = response.json()
        assert payload["success"] is False
        assert payload["error"]["code"] in ERROR_CODES
        assert isinstance(payload["error"]["message"], str)
    else:
        assert response.json() == {"success": True}


@pytest.fixture
def settings_override(settings):
    # A limit out of the way: the fuzzer sends far more than 100 requests a second.
    settings.SUPALYTICS_RECEIVER = {**settings.SUPALYTICS_RECEIVER, "RATE_LIMIT": 10**9}
