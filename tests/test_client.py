from datetime import datetime, timezone
from email.utils import format_datetime

import pytest
import requests

from django_supalytics import __version__
from django_supalytics.client import (
    Kind,
    ServerClock,
    backoff,
    classify,
    error_text,
    parse_ratelimit_reset,
    parse_retry_after,
    post_event,
    rate_limit_wait,
)
from tests.httpserver import DROP, Answer

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, Kind.SENT),
        (201, Kind.SENT),
        (204, Kind.SENT),
        (429, Kind.RATE_LIMITED),
        (408, Kind.RETRY),
        (500, Kind.RETRY),
        (502, Kind.RETRY),
        (503, Kind.RETRY),
        (504, Kind.RETRY),
        (599, Kind.RETRY),
        (501, Kind.FAILED),
        (505, Kind.FAILED),
        (400, Kind.FAILED),
        (401, Kind.FAILED),
        (403, Kind.FAILED),
        (404, Kind.FAILED),
        (413, Kind.FAILED),
        (415, Kind.FAILED),
        (301, Kind.FAILED),
    ],
)
def test_classify_follows_the_retry_classes(status, kind):
    assert classify(status) is kind


def test_retry_after_in_seconds():
    assert parse_retry_after("3", NOW) == 3.0
    assert parse_retry_after(" 0 ", NOW) == 0.0


def test_retry_after_as_http_date():
    when = datetime.fromtimestamp(NOW + 7, tz=timezone.utc)
    assert parse_retry_after(format_datetime(when, usegmt=True), NOW) == pytest.approx(7, abs=1)


@pytest.mark.parametrize("value", [None, "", "soon", "Mon, 99 Foo"])
def test_retry_after_unreadable_is_none(value):
    assert parse_retry_after(value, NOW) is None


def test_reset_as_epoch_seconds():
    assert parse_ratelimit_reset(str(int(NOW) + 2), NOW) == 2.0


def test_reset_as_epoch_milliseconds():
    assert parse_ratelimit_reset(str(int(NOW * 1000) + 1500), NOW) == pytest.approx(1.5)


def test_reset_small_number_is_a_delta():
    assert parse_ratelimit_reset("4", NOW) == 4.0


def test_reset_in_the_past_waits_nothing():
    assert parse_ratelimit_reset(str(int(NOW) - 5), NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "x", "-1", "nan"])
def test_reset_unreadable_is_none(value):
    assert parse_ratelimit_reset(value, NOW) is None


def test_rate_limit_wait_takes_the_longer_header_with_floor_and_cap():
    assert rate_limit_wait({"Retry-After": "2", "X-RateLimit-Reset": "5"}, NOW, 60) == 5
    assert rate_limit_wait({}, NOW, 60) == 1.0
    assert rate_limit_wait({"Retry-After": "0"}, NOW, 60) == 1.0
    assert rate_limit_wait({"Retry-After": "3600"}, NOW, 60) == 60


def test_backoff_is_jittered_within_a_capped_exponential():
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (20, 600)]:
        samples = [backoff(attempt, 1.0, 600.0) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling / 2  # full jitter spreads over the range


def _response(status, text, reason="Bad"):
    response = requests.Response()
    response.status_code = status
    response._content = text.encode()
    response.reason = reason
    return response


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"success": false, "error": {"code": "invalid_name", "message": "bad"}}',
            "invalid_name: bad",
        ),
        ('{"error": "nope"}', "nope"),
        ('{"message": "msg"}', "msg"),
        ("plain text", "plain text"),
        ("", "Bad"),
    ],
)
def test_error_text_is_read_tolerantly(text, expected):
    assert error_text(_response(400, text)) == expected


def test_error_text_is_cut_to_500_chars():
    assert len(error_text(_response(500, "x" * 2000))) == 500


def test_post_sends_the_contract_headers_and_body(endpoint):
    outcome = post_event({"name": "a", "metadata": {"x": 1}}, "key-1", "sly_secret")
    assert outcome.kind is Kind.SENT
    [request] = endpoint.requests
    assert request.json == {"name": "a", "metadata": {"x": 1}}
    assert request.headers["Authorization"] == "Bearer sly_secret"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == "key-1"
    assert request.headers["User-Agent"] == f"django-supalytics/{__version__}"


def test_post_dropped_connection_is_a_retry_without_the_key(endpoint):
    endpoint.script(DROP)
    outcome = post_event({"name": "a"}, "k", "sly_secret")
    assert outcome.kind is Kind.RETRY
    assert "sly_secret" not in outcome.error


def test_post_429_reads_the_wait(endpoint):
    endpoint.script(Answer(429, {"error": "rate_limited"}, {"Retry-After": "2"}))
    outcome = post_event({"name": "a"}, "k", "sly_x")
    assert (outcome.kind, outcome.wait) == (Kind.RATE_LIMITED, 2.0)


def test_post_success_with_none_remaining_asks_for_a_pause(endpoint):
    endpoint.script(Answer(200, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"}))
    assert post_event({"name": "a"}, "k", "sly_x").wait == 1.0


def test_one_outcome_vocabulary_that_is_plain_strings_everywhere():
    """Results, task counts and command output share ``Kind``; its members act as their values
    (in sets, dicts, f-strings, JSON) on every supported Python."""
    import json

    assert {Kind.SENT, Kind.DEFERRED} == {"sent", "deferred"}
    assert {"skipped": 1}[Kind.SKIPPED] == 1
    assert f"{Kind.RATE_LIMITED}|{Kind.RETRY!s}|{Kind.FAILED:>7}" == "rate_limited|retry| failed"
    assert json.dumps({Kind.SENT: [Kind.RETRY]}) == '{"sent": ["retry"]}'
    assert Kind("deferred") is Kind.DEFERRED


def test_a_pause_asked_by_a_success_is_capped(endpoint, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "RATE_LIMIT_WAIT_MAX": 5.0}
    endpoint.script(Answer(200, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "90"}))
    assert post_event({"name": "a"}, "k", "sly_x").wait == 5.0


@pytest.mark.parametrize("offset", [3600, -3600.0, 0.45, -0.3])
def test_a_pause_until_the_reset_is_measured_on_the_servers_clock(endpoint, offset):
    """A server clock an hour (or a fraction of a second) off: X-RateLimit-Reset names the end
    of the server's current second, and the pause lasts what is left of it, not an hour."""
    import time

    def answer():
        server_now = time.time() + offset
        reset = str(int(server_now) + 1)
        return Answer(200, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset})

    for _ in range(3):
        endpoint.script(answer())
        wait = post_event({"name": "a"}, "k", "sly_x").wait
        assert wait is not None and 0.0 <= wait <= 1.0


def test_the_server_clock_is_pinned_to_about_a_round_trip():
    import random

    clock = ServerClock()
    assert clock.offset() == 0.0
    rng = random.Random(7)
    for offset in (-0.3, 0.45, 3600.0):  # the last: the server's clock was set meanwhile
        for _ in range(200):
            sent = 1_800_000_000 + rng.uniform(0, 1000)
            counted = sent + 0.02 + rng.uniform(-0.01, 0.01)  # one way, jittered
            clock.observe(str(int(counted + offset) + 1), sent, sent + 0.04)
        assert abs(clock.offset() - offset) < 0.03
    clock.observe("1.5", 0, 0)  # not whole epoch seconds: no news about the clock
    clock.observe("90", 0, 0)
    clock.observe("soon", 0, 0)
    assert abs(clock.offset() - 3600.0) < 0.03


@pytest.mark.parametrize(
    "key", ["sly_secret\nX-Evil: 1", "sly_secret_\u043a\u043b\u044e\u0447", "sly_secret\x7f", ""]
)
def test_post_event_never_raises_for_an_unusable_key_and_never_quotes_it(server, settings, key):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENDPOINT": server.url}
    outcome = post_event({"name": "e"}, "idem", key)
    assert outcome.kind is Kind.RETRY
    assert outcome.error.startswith("not sent: SUPALYTICS API_KEY")
    assert "sly_secret" not in outcome.error
    assert not server.requests
