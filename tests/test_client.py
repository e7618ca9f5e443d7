from datetime import datetime, timezone
from email.utils import format_datetime

import pytest

from django_supalytics import __version__, waits
from django_supalytics.client import (
    MISCONFIGURED_WAIT,
    Kind,
    classify,
    error_text,
    post_event,
    request_deadline,
)
from django_supalytics.scrubbing import ERROR_TEXT_MAX, scrub
from django_supalytics.waits import (
    ServerClock,
    backoff,
    parse_ratelimit_reset,
    parse_retry_after,
    rate_limit_wait,
)
from tests.httpserver import DROP, ENDLESS, Answer

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
        (301, Kind.DEFERRED),
        (302, Kind.DEFERRED),
        (307, Kind.DEFERRED),
        (308, Kind.DEFERRED),
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


def test_rate_limit_wait_with_floor_and_cap():
    assert rate_limit_wait({"Retry-After": "2", "X-RateLimit-Reset": "5"}, NOW, 60) == 5
    assert rate_limit_wait({}, NOW, 60) == 1.0
    assert rate_limit_wait({"Retry-After": "0"}, NOW, 60) == 1.0
    assert rate_limit_wait({"Retry-After": "3600"}, NOW, 60) == 60


def test_a_429_near_the_end_of_a_window_waits_for_the_reset_not_a_whole_second():
    """Retry-After is whole seconds: "1" for the last 30 ms of a window is the reset rounded."""
    reset = str(int(NOW) + 1)
    wait = rate_limit_wait({"Retry-After": "1", "X-RateLimit-Reset": reset}, int(NOW) + 0.97, 60)
    assert wait == pytest.approx(0.03)
    assert rate_limit_wait({"X-RateLimit-Reset": reset}, int(NOW) + 0.5, 60) == 0.5
    # A reset already past on our reckoning: a short wait, never a loop of requests.
    assert rate_limit_wait({"Retry-After": "1", "X-RateLimit-Reset": reset}, NOW + 5, 60) == 0.02
    # The server asks for more than the window: its Retry-After wins.
    assert rate_limit_wait({"Retry-After": "30", "X-RateLimit-Reset": reset}, int(NOW), 60) == 30


def test_backoff_is_jittered_within_a_capped_exponential():
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (20, 600)]:
        samples = [backoff(attempt, 1.0, 600.0) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling / 2  # full jitter spreads over the range


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
    assert error_text(text, "Bad") == expected


def test_an_error_answer_is_cut_to_500_chars(endpoint):
    endpoint.script(Answer(500, "x" * 2000))
    outcome = post_event({"name": "a"}, "k", "sly_x")
    assert (outcome.kind, len(outcome.error)) == (Kind.RETRY, 500)


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


def test_a_pause_asked_by_a_success_is_capped(endpoint):
    endpoint.script(Answer(200, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "90"}))
    assert post_event({"name": "a"}, "k", "sly_x").wait == waits.RATE_LIMIT_WAIT_MAX == 60.0


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
    assert clock.earliest() == 0.0
    rng = random.Random(7)
    for offset in (-0.3, 0.45, 3600.0):  # the last: the server's clock was set meanwhile
        for _ in range(200):
            sent = 1_800_000_000 + rng.uniform(0, 1000)
            counted = sent + 0.02 + rng.uniform(-0.01, 0.01)  # one way, jittered
            clock.observe(str(int(counted + offset) + 1), sent, sent + 0.04)
        # Never above the true offset (a pause never ends early), within the way back below.
        assert offset - 0.04 <= clock.earliest() <= offset
    clock.observe("1.5", 0, 0)  # not whole epoch seconds: no news about the clock
    clock.observe("90", 0, 0)
    clock.observe("soon", 0, 0)
    assert 3600.0 - 0.04 <= clock.earliest() <= 3600.0


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


def test_the_connection_is_kept_alive_between_requests(endpoint):
    """Reading the answer (bounded, raw) hands the connection back to the pool."""
    endpoint.script(Answer(200), Answer(400, {"error": "invalid_name"}), Answer(503))
    for _ in range(4):
        post_event({"name": "a"}, "k", "sly_x")
    assert len({r.port for r in endpoint.requests}) == 1


# Redirects: never followed; the row waits and the error says which setting to fix.


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed_and_names_the_setting_to_fix(endpoint, status):
    """Followed, a 301/302/303 would become a GET of the vendor's read API, answered 200 (the
    row marked sent, never delivered); a 307/308 would POST again without a rate-limit slot."""
    endpoint.script(Answer(status, headers={"Location": "https://x.example/v1/events"}))
    outcome = post_event({"name": "a"}, "k", "sly_x")
    assert (outcome.kind, outcome.status_code) == (Kind.DEFERRED, status)
    assert outcome.wait == MISCONFIGURED_WAIT
    assert outcome.error == (
        f"the API answered {status} (redirect to https://x.example/v1/events): "
        "SUPALYTICS['ENDPOINT'] is wrong; set it to the address the API names"
    )
    assert [r.method for r in endpoint.requests] == ["POST"]


def test_a_redirect_without_a_location_still_names_the_setting(endpoint):
    endpoint.script(Answer(300))
    outcome = post_event({"name": "a"}, "k", "sly_x")
    assert outcome.kind is Kind.DEFERRED
    assert "(a redirect without a Location): SUPALYTICS['ENDPOINT'] is wrong" in outcome.error


def test_the_location_of_a_redirect_is_scrubbed_and_cut(endpoint):
    location = "https://x.example/?key=sly_secret&c=\x1b[31mred\x1b[0m&" + "a" * 2000
    endpoint.script(Answer(301, headers={"Location": location}))
    error = post_event({"name": "a"}, "k", "sly_secret").error
    assert error.startswith(
        "the API answered 301 (redirect to https://x.example/?key=[API key]&c=red&"
    )
    assert error.endswith("SUPALYTICS['ENDPOINT'] is wrong; set it to the address the API names")
    assert "sly_secret" not in error and "\x1b" not in error
    assert len(error) <= ERROR_TEXT_MAX


# A total deadline per request


def test_the_request_deadline_is_request_timeout(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "REQUEST_TIMEOUT": 7.5}
    assert request_deadline() == 7.5
    settings.SUPALYTICS = {**settings.SUPALYTICS, "REQUEST_TIMEOUT": 2.0}
    assert request_deadline() == 2.0


def _timed_post(api_key="sly_x"):
    import time

    start = time.monotonic()
    outcome = post_event({"name": "a"}, "k", api_key)
    return outcome, time.monotonic() - start


@pytest.mark.parametrize(
    "answer",
    [
        Answer(200, trickle_head=0.05),  # the status line and headers, a byte every 50 ms
        Answer(500, {"error": "x" * 100}, trickle_body=0.05),  # the body only
    ],
    ids=["headers", "body"],
)
def test_a_trickling_answer_is_cut_off_at_the_deadline(endpoint, settings, answer):
    """Each byte comes well within a socket timeout, so only a total deadline ends it: sent in
    full, either answer takes over 5 s."""
    settings.SUPALYTICS = {**settings.SUPALYTICS, "REQUEST_TIMEOUT": 0.5}
    endpoint.script(answer)
    outcome, took = _timed_post()
    assert (outcome.kind, outcome.status_code) == (Kind.RETRY, None)
    assert outcome.error == "timeout: no complete answer within 0.5 s"
    assert 0.45 <= took < 1.5
    assert post_event({"name": "a"}, "k", "sly_x").kind is Kind.SENT  # on a new connection


def test_a_hanging_api_is_cut_off_at_the_deadline(endpoint, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "REQUEST_TIMEOUT": 0.3}
    endpoint.script(Answer(200, delay=2.0))
    outcome, took = _timed_post()
    assert (outcome.kind, outcome.error) == (Kind.RETRY, "timeout: no complete answer within 0.3 s")
    assert took < 1.3


def test_a_finished_requests_deadline_never_cuts_the_next_one(endpoint, settings):
    """The second request reuses the first one's connection and is still in flight when the
    first one's deadline passes."""
    import time

    settings.SUPALYTICS = {**settings.SUPALYTICS, "REQUEST_TIMEOUT": 2.0}
    assert post_event({"name": "a"}, "k", "sly_x").kind is Kind.SENT
    time.sleep(0.5)
    endpoint.script(Answer(200, delay=1.6))
    assert post_event({"name": "a"}, "k", "sly_x").kind is Kind.SENT


def test_a_connection_that_is_never_accepted_times_out_on_connect(settings):
    """A listening socket whose backlog is full drops new SYNs: the connect hangs."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):  # more than the backlog holds
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        settings.SUPALYTICS = {
            **settings.SUPALYTICS,
            "ENDPOINT": f"http://127.0.0.1:{port}/v1/events",
            "REQUEST_TIMEOUT": 0.3,
        }
        outcome, took = _timed_post()
    finally:
        for sock in [*fillers, listener]:
            sock.close()
    assert (outcome.kind, outcome.error) == (Kind.RETRY, "timeout: no connection within 0.3 s")
    assert took < 1.3


# A bounded answer


@pytest.mark.parametrize(("status", "kind"), [(500, Kind.RETRY), (200, Kind.SENT)])
def test_an_endless_answer_is_read_only_so_far_and_classified_by_its_status(
    endpoint, settings, status, kind
):
    """Read in full, the body would take until the deadline (a timeout, not the status)."""
    settings.SUPALYTICS = {**settings.SUPALYTICS, "REQUEST_TIMEOUT": 5.0}
    endpoint.script(Answer(status, ENDLESS))
    outcome, took = _timed_post()
    assert (outcome.kind, outcome.status_code) == (kind, status)
    assert outcome.error == ("x" * ERROR_TEXT_MAX if kind is Kind.RETRY else "")
    assert took < 2.5
    # The next request is answered: the cut connection, the rest still coming, is not reused.
    assert post_event({"name": "a"}, "k", "sly_x").kind is Kind.SENT


# Scrubbed text


def test_scrub_replaces_the_key_and_any_bearer_token():
    text = "no: Authorization: Bearer sly_secret; also bearer abc.DEF-1_2~+/== and sly_secret"
    assert scrub(text, "sly_secret") == (
        "no: Authorization: Bearer [API key]; also Bearer [redacted] and [API key]"
    )


@pytest.mark.parametrize(
    "echoed", ['key "sly_<a&b>/+"', "key sly_&lt;a&amp;b&gt;/+", "key sly_%3Ca%26b%3E%2F%2B"]
)
def test_scrub_finds_the_key_as_an_answer_may_encode_it(echoed):
    assert scrub(echoed, "sly_<a&b>/+").replace('"', "") == "key [API key]"


def test_scrub_turns_line_breaks_and_tabs_into_spaces():
    assert scrub("a\r\nb\tc\nd\u2028e", "sly_x") == "a  b c d e"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\x00b\x07c\x08d\x1fe", "abcde"),  # C0
        ("a\x7fb", "ab"),  # DEL
        ("a\x85b\x9bc\x9fd", "abcd"),  # C1
        ("\x1b[1;31mred\x1b[0m", "red"),  # CSI (colours)
        ("\x1b[2J\x1b[Hclear", "clear"),  # CSI (clear the screen)
        ("\x1b]0;title\x07text", "text"),  # OSC (a terminal's title)
        ("\x1b]8;;https://x\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8 (a hyperlink)
        ("a\x1bcb", "ab"),  # ESC and one character (a reset)
        ("ünïcödé ✓", "ünïcödé ✓"),  # printable text stays
    ],
)
def test_scrub_removes_every_other_control_character(text, expected):
    assert scrub(text, "sly_x") == expected


def test_scrub_finds_the_key_split_by_control_characters():
    assert scrub("k=sly_se\x00cr\x1b[0met", "sly_secret") == "k=[API key]"


def test_scrub_cuts_after_replacing_so_no_part_of_the_key_is_kept():
    text = "x" * (ERROR_TEXT_MAX - 4) + "sly_secret_key"
    scrubbed = scrub(text, "sly_secret_key")
    assert len(scrubbed) == ERROR_TEXT_MAX and "sly_" not in scrubbed


def test_scrub_ignores_a_key_too_short_to_be_one():
    assert scrub("a b c", "a") == "a b c"


def test_an_error_page_echoing_the_key_is_scrubbed(endpoint):
    endpoint.script(
        Answer(400, b"Bad request\r\nAuthorization: Bearer sly_secret\r\n\x1b[2J\x07Cookie: x")
    )
    outcome = post_event({"name": "a"}, "k", "sly_secret")
    assert (outcome.kind, outcome.status_code) == (Kind.FAILED, 400)
    assert outcome.error == "Bad request  Authorization: Bearer [API key]  Cookie: x"


def test_an_exception_message_is_scrubbed(settings, server):
    """A refused connection's message quotes the URL: here, one that holds the key."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.SUPALYTICS = {
        **settings.SUPALYTICS,
        "ENDPOINT": f"http://127.0.0.1:{port}/v1/events?key=sly_secret",
    }
    outcome = post_event({"name": "a"}, "k", "sly_secret")
    assert outcome.kind is Kind.RETRY
    assert outcome.error.startswith("ConnectionError: ")
    assert "[API key]" in outcome.error and "sly_secret" not in outcome.error


def test_scrub_removes_the_invisible_characters_that_reorder_or_hide_text():
    # A right-to-left override makes a log line read backwards; a zero-width space inside the
    # key would hide it from the replacement.
    text = "a\u202eb\u2066c\u200bd\ufeffe key=sly_se\u200bcr\u200det"
    assert scrub(text, "sly_secret") == "abcde key=[API key]"


def test_an_error_page_hiding_the_key_with_invisible_characters_is_scrubbed(endpoint):
    page = "<pre>Authorization: Bearer sly_\u200bsecret\r\n\u202eevil\x1b]0;x\x07</pre>"
    endpoint.script(Answer(400, page.encode()))
    outcome = post_event({"name": "a"}, "k", "sly_secret")
    assert outcome.error == "<pre>Authorization: Bearer [API key]  evil</pre>"


# 401, 403, 404: the setting to check, never the page

PAGE = b"<html><body><h1>Unauthorized</h1>" + b"<p>lorem ipsum</p>" * 200 + b"</body></html>"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (
            401,
            "401 Unauthorized: the API refused the key: SUPALYTICS['API_KEY'] is wrong; check it",
        ),
        (403, "403 Forbidden: the API refused the key: SUPALYTICS['API_KEY'] is wrong"),
        (404, "404 Not Found: no events API at this address: SUPALYTICS['ENDPOINT'] is wrong"),
    ],
)
def test_a_refusal_names_the_setting_to_check_and_never_stores_the_page(endpoint, status, expected):
    from django_supalytics.stats import SETTING_WRONG_RE

    endpoint.script(Answer(status, PAGE))
    outcome = post_event({"name": "a"}, "k", "sly_secret")
    assert (outcome.kind, outcome.status_code) == (Kind.FAILED, status)
    assert outcome.error.startswith(expected)
    assert "<" not in outcome.error and "lorem" not in outcome.error
    assert len(outcome.error) < 150
    match = SETTING_WRONG_RE.search(outcome.error)
    assert match and match.group(1) == ("ENDPOINT" if status == 404 else "API_KEY")


def test_a_refusal_quotes_a_short_scrubbed_excerpt_of_the_json_error(endpoint):
    endpoint.script(
        Answer(401, {"error": {"code": "invalid_api_key", "message": "bad key"}}),
        Answer(401, {"error": "no such key: Bearer sly_secret\r\n" + "x" * 500}),
        Answer(404, {"message": "route not found", "detail": "x"}),
    )
    errors = [post_event({"name": "a"}, "k", "sly_secret").error for _ in range(3)]
    assert errors[0].endswith("check it (the API said: invalid_api_key: bad key)")
    assert "(the API said: no such key: Bearer [API key]  xxx" in errors[1]
    excerpt = errors[1].split("(the API said: ")[1]
    assert excerpt.endswith("x)") and len(excerpt) == 100 + len(")")
    assert errors[2].endswith("(the API's is https://api.supalytics.co/v1/events)")


# Decimal metadata: a JSON number with its exact digits


def test_a_decimal_is_sent_as_a_json_number_with_its_exact_digits(endpoint):
    from decimal import Decimal

    from django_supalytics.validation import validate_metadata

    metadata = validate_metadata({"price": Decimal("29.90"), "tiny": Decimal("1E-7")})
    assert post_event({"name": "a", "metadata": metadata}, "k", "sly_x").kind is Kind.SENT
    [request] = endpoint.requests
    assert request.body == b'{"name":"a","metadata":{"price":29.90,"tiny":0.0000001}}'


# The key hidden from Django's debug page and error mails


def _frames_html(exc_info):
    from django.views.debug import ExceptionReporter

    return ExceptionReporter(None, *exc_info).get_traceback_html()


def test_the_key_is_hidden_in_the_frames_of_an_error_mail(endpoint, monkeypatch):
    from django_supalytics import client

    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(client, "server_clock", broken)
    key = "sly_" + "secret_frames"  # written so: the page quotes the source around each frame
    with pytest.raises(RuntimeError) as raised:
        post_event({"name": "a"}, "k", key)
    # From the client's first frame on (the test's own frame holds the key, and is not ours).
    html = _frames_html((raised.type, raised.value, raised.tb.tb_next))
    assert key not in html
    assert "********************" in html
