"""Schemathesis fuzzes the receiver from its own OpenAPI document, over a loopback socket.

Positive cases (valid events, valid or replayed idempotency keys) and negative ones (bodies,
headers and types the schema forbids, NUL and surrogate escapes included) go to the threaded
receiver of the ``supalytics_receiver`` fixture with a known key. Every answer must be a
documented status with a body matching the schema: never a 5xx.
"""

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from django_supalytics.receiver.openapi import ERROR_CODES
from django_supalytics.receiver.openapi import schema as openapi_schema

#: Examples per generation mode (positive and negative), per run.
EXAMPLES_PER_MODE = 150
#: Characters the server strips from the ends of a header value (latin-1 whitespace but space).
HEADER_STRIPPED = "".join(chr(c) for c in range(256) if chr(c).isspace() and c != 0x20)

# The document as the receiver serves it at /v1/openapi.json (its server URL is relative).
schema = schemathesis.openapi.from_dict(openapi_schema("/"))
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=EXAMPLES_PER_MODE,
    allow_x00=True,
    # The HTTP server strips what surrounds a header value (tabs, and whatever else Python's
    # str.strip() takes) before any view sees it: "\tkey" arrives as "key" and is rightly
    # accepted. A "negative" header built from these could only be a false alarm.
    exclude_header_characters=HEADER_STRIPPED,
)


@pytest.fixture
def receiver(settings, request):
    # A limit out of the way: the fuzzer sends far more than 100 requests a second.
    settings.SUPALYTICS_RECEIVER = {**settings.SUPALYTICS_RECEIVER, "RATE_LIMIT": 10**9}
    live = request.getfixturevalue("supalytics_receiver")
    with requests.Session() as session:
        yield live, session


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_MODE,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_receiver_answers_every_generated_request_as_documented(case, receiver):
    live, session = receiver
    response = case.call(
        base_url=live.base_url,
        session=session,
        headers={"Authorization": f"Bearer {live.api_key}"},
        timeout=10,
    )
    assert response.status_code < 500, response.text
    # Schemathesis's checks: no 5xx, documented status, headers (Allow on a 405) and body,
    # schema-valid data accepted, schema-violating data refused.
    case.validate_response(response)
    if response.status_code >= 400:
        body = response.json()
        assert body["success"] is False
        assert body["error"]["code"] in ERROR_CODES
