"""The mock receiver over a real socket: every row of api-contract.md's response table."""

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from django_supalytics.receiver import faults
from django_supalytics.receiver.models import ReceivedEvent
from tests.processes import free_port, start_receiver_process

KEY = "sly_test_key"


@pytest.fixture
def url(supalytics_receiver):
    return supalytics_receiver.url


def post(url, body=None, *, key=KEY, headers=None, data=None, method="POST"):
    all_headers = {"Content-Type": "application/json"}
    if key is not None:
        all_headers["Authorization"] = f"Bearer {key}"
    all_headers.update(headers or {})
    if data is None and body is not None:
        data = json.dumps(body)
    return requests.request(method, url, data=data, headers=all_headers, timeout=10)


def assert_error(response, status, code, field=None):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    if field is not None:
        assert body["error"]["field"] == field


def test_the_vendors_curl_example_is_accepted_byte_for_byte(url, supalytics_receiver):
    # The seed page's example, run as written (only the host differs).
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-X",
            "POST",
            url,
            "-H",
            f"Authorization: Bearer {KEY}",
            "-H",
            "Content-Type: application/json",
            "-d",
            """{
    "name": "subscription_created",
    "visitor_id": "abc123",
    "metadata": {
      "plan": "pro",
      "amount": 29
    }
  }""",
        ],
        capture_output=True,
        check=True,
        timeout=20,
    )
    assert result.stdout == b'{"success": true}'
    event = supalytics_receiver.events().get()
    assert (event.name, event.visitor_id, event.metadata) == (
        "subscription_created",
        "abc123",
        {"plan": "pro", "amount": 29},
    )
    # At most half of a key is kept: 6 of its 12 characters.
    assert event.key_prefix == KEY[:6] and KEY not in event.key_prefix + event.key_id


def test_accepted_event_carries_rate_limit_headers(url):
    response = post(url, {"name": "a"})
    assert response.status_code == 200
    assert response.json() == {"success": True}
    assert response.headers["X-RateLimit-Limit"] == "100"
    assert response.headers["X-RateLimit-Remaining"] == "99"
    reset = int(response.headers["X-RateLimit-Reset"])
    assert time.time() - 1 <= reset <= time.time() + 2


def test_a_clock_offset_moves_the_windows_and_the_reset(url, settings):
    settings.SUPALYTICS_RECEIVER = {**settings.SUPALYTICS_RECEIVER, "CLOCK_OFFSET": -3600.5}
    before = time.time()
    response = post(url, {"name": "a"})
    reset = int(response.headers["X-RateLimit-Reset"])
    assert int(before - 3600.5) + 1 <= reset <= int(time.time() - 3600.5) + 1


def test_answers_are_counted(url, supalytics_receiver):
    post(url, {"name": "a"}, headers={"Idempotency-Key": "k"})
    post(url, {"name": "a"}, headers={"Idempotency-Key": "k"})
    post(url, {"name": "Bad"})
    post(url, {"name": "a"}, key="sly_wrong")
    assert supalytics_receiver.stats() == {"200": 2, "replayed": 1, "400": 1, "401": 1}
    listed = requests.get(f"{supalytics_receiver.base_url}/v1/_control/stats", timeout=10)
    assert listed.json() == supalytics_receiver.stats()


def test_replayed_idempotency_key_is_stored_once(url):
    first = post(url, {"name": "a"}, headers={"Idempotency-Key": "k-1"})
    second = post(url, {"name": "a"}, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == second.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == {"success": True}
    assert ReceivedEvent.objects.count() == 1


def test_idempotency_is_per_api_key(url):
    post(url, {"name": "a"}, headers={"Idempotency-Key": "k-1"})
    other = post(url, {"name": "a"}, key="sly_test_other", headers={"Idempotency-Key": "k-1"})
    assert "Idempotent-Replayed" not in other.headers
    assert ReceivedEvent.objects.count() == 2


@pytest.mark.parametrize("auth", [None, "", "Basic abc", "Bearer", "Bearer ", "Bearer a b"])
def test_missing_or_malformed_authorization(url, auth):
    headers = {} if auth is None else {"Authorization": auth}
    response = post(url, {"name": "a"}, key=None, headers=headers)
    assert_error(response, 401, "missing_api_key")
    assert "X-RateLimit-Limit" not in response.headers


def test_unknown_key(url):
    assert_error(post(url, {"name": "a"}, key="sly_wrong"), 401, "invalid_api_key")


@pytest.mark.parametrize("data", ["{", "null", "[]", '"name"', "1", "\xff", '{"name": NaN}'])
def test_not_json_or_not_an_object(url, data):
    response = post(url, data=data.encode("latin-1"))
    assert_error(response, 400, "invalid_json")
    assert response.headers["X-RateLimit-Limit"] == "100"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type(url, content_type):
    response = post(url, {"name": "a"}, headers={"Content-Type": content_type})
    assert_error(response, 415, "unsupported_media_type")


def test_content_type_with_charset_is_json(url):
    response = post(url, {"name": "a"}, headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 200


def test_body_over_16_kib(url):
    body = json.dumps({"name": "a", "metadata": {"x": "y" * 17000}})
    assert_error(post(url, data=body), 413, "payload_too_large")


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"name": "Bad"}, "invalid_name", "name"),
        ({"visitor_id": "v"}, "invalid_name", "name"),
        ({"name": "a", "visitor_id": "has space"}, "invalid_visitor_id", "visitor_id"),
        ({"name": "a", "visitor_id": None}, "invalid_visitor_id", "visitor_id"),
        (
            {"name": "a", "metadata": {f"k{i}": 1 for i in range(11)}},
            "invalid_metadata",
            "metadata",
        ),
        ({"name": "a", "metadata": {"x": [1]}}, "invalid_metadata", "metadata"),
        ({"name": "a", "timestamp": 1}, "unknown_field", "timestamp"),
    ],
)
def test_invalid_fields_are_named(url, body, code, field):
    assert_error(post(url, body), 400, code, field)
    assert not ReceivedEvent.objects.exists()


def test_metadata_message_matches_the_contract(url):
    response = post(url, {"name": "a", "metadata": {f"k{i}": 1 for i in range(11)}})
    assert response.json()["error"]["message"] == "metadata has 11 keys; at most 10 are allowed"


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_other_methods(url, method):
    assert_error(post(url, {"name": "a"}, method=method), 405, "method_not_allowed")


def _burst(url, count):
    """``count`` concurrent requests, started just after a one-second window opens."""
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))

    def one(key):
        return session.post(
            url, json={"name": "burst"}, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, ["sly_test_other"] * 32))  # warm the connections up, on another key
        time.sleep(1.01 - time.time() % 1)
        return list(pool.map(one, [KEY] * count))


def assert_windows_exact(responses, limit=100):
    """In every window at most ``limit`` accepted, and none refused that the limit allowed."""
    windows: dict[str, list[int]] = {}
    for response in responses:
        windows.setdefault(response.headers["X-RateLimit-Reset"], []).append(response.status_code)
    for codes in windows.values():
        assert codes.count(200) == min(limit, len(codes)), windows
        assert codes.count(429) == len(codes) - codes.count(200)
    return windows


@pytest.fixture
def receivers(processes, transactional_db):
    """Two receiver processes sharing this run's Redis and database."""
    ports = [free_port(), free_port()]
    for port in ports:
        processes.append(start_receiver_process(port))
    return [f"http://127.0.0.1:{port}/v1/events" for port in ports]


def burst_past_the_limit(send, tries=3):
    """The answers of a burst (``send()``) whose busiest window held more than the limit. A burst
    the machine could not make that fast (other tests share its cores) is still checked for
    exactness, then sent again, up to ``tries`` times."""
    for _ in range(tries):
        responses = send()
        windows = assert_windows_exact(responses)
        if max(len(codes) for codes in windows.values()) > 100:
            return responses
    pytest.fail(f"harness: no burst exceeded the limit in {tries} tries: {windows}")


def assert_limited_burst(responses):
    """The burst's busiest window held more than the limit: exactly 100 accepted there."""
    windows = assert_windows_exact(responses)
    first = max(windows.values(), key=len)
    assert len(first) > 100, f"the burst was too slow to exceed the limit: {windows}"
    assert first.count(200) == 100
    for response in (r for r in responses if r.status_code == 429):
        assert_error(response, 429, "rate_limited")
        assert response.headers["X-RateLimit-Remaining"] == "0"
        assert response.headers["X-RateLimit-Limit"] == "100"
        assert int(response.headers["Retry-After"]) >= 1


@pytest.mark.redis
def test_rate_limit_burst_of_150_accepts_exactly_100_per_window(receivers):
    responses = burst_past_the_limit(lambda: _burst(receivers[0], 150))
    assert_limited_burst(responses)
    reset = int(min(r.headers["X-RateLimit-Reset"] for r in responses))
    time.sleep(max(0.0, reset + 1 - time.time()) + 0.01)
    assert post(receivers[0], {"name": "next_window"}).status_code == 200


@pytest.mark.redis
def test_two_receiver_processes_share_one_limit(receivers):
    def both():
        with ThreadPoolExecutor(max_workers=2) as pool:
            first, second = pool.map(lambda url: _burst(url, 90), receivers)
        return first + second

    assert_limited_burst(burst_past_the_limit(both))


def test_injected_status_for_the_next_n_requests(url, supalytics_receiver):
    supalytics_receiver.inject(500, count=2)
    codes = [post(url, {"name": "a"}).status_code for _ in range(3)]
    assert codes == [500, 500, 200]


def test_injected_fault_for_one_key_only(url, supalytics_receiver):
    supalytics_receiver.inject(503, api_key="sly_test_other")
    assert post(url, {"name": "a"}).status_code == 200
    assert_error(post(url, {"name": "a"}, key="sly_test_other"), 503, "injected_fault")


def test_injected_drop_closes_the_connection(url, supalytics_receiver):
    supalytics_receiver.inject(drop=True, count=1)
    with pytest.raises(requests.ConnectionError):
        post(url, {"name": "a"})
    assert post(url, {"name": "a"}).status_code == 200


def test_injected_fraction_applies_to_some(url, supalytics_receiver):
    supalytics_receiver.inject(500, fraction=0.5)
    codes = [post(url, {"name": "a"}).status_code for _ in range(40)]
    assert 0 < codes.count(500) < 40


def test_reset_clears_faults(url, supalytics_receiver):
    supalytics_receiver.inject(500)
    faults.reset()
    assert post(url, {"name": "a"}).status_code == 200


def test_control_endpoint_injects_and_resets(supalytics_receiver):
    base = supalytics_receiver.base_url
    created = requests.post(
        f"{base}/v1/_control/faults", json={"status": 502, "count": 1}, timeout=10
    )
    assert created.status_code == 201
    assert post(supalytics_receiver.url, {"name": "a"}).status_code == 502
    assert post(supalytics_receiver.url, {"name": "b"}).status_code == 200
    listed = requests.get(f"{base}/v1/_control/events", timeout=10).json()
    assert [e["name"] for e in listed["events"]] == ["b"]
    assert requests.post(f"{base}/v1/_control/reset", json={}, timeout=10).status_code == 200
    assert not ReceivedEvent.objects.exists()


def test_control_endpoint_refuses_bad_faults(supalytics_receiver):
    base = supalytics_receiver.base_url
    bad = requests.post(f"{base}/v1/_control/faults", json={"status": 42}, timeout=10)
    assert_error(bad, 400, "invalid_fault")


def test_control_endpoint_is_off_unless_enabled(supalytics_receiver, settings):
    settings.SUPALYTICS_RECEIVER = {**settings.SUPALYTICS_RECEIVER, "CONTROL": False}
    response = requests.post(f"{supalytics_receiver.base_url}/v1/_control/reset", timeout=10)
    assert response.status_code == 404


def test_openapi_description_is_served(supalytics_receiver):
    schema = requests.get(f"{supalytics_receiver.base_url}/v1/openapi.json", timeout=10).json()
    assert schema["openapi"].startswith("3.")
    assert "post" in schema["paths"]["/v1/events"]


def test_standalone_receiver_needs_no_project(standalone):
    """``python -m django_supalytics.receiver``: for clients that are not Django projects."""
    _, port = standalone()
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v1/events"
    assert post(url, {"name": "signed_up"}, key="sly_standalone").json() == {"success": True}
    assert_error(post(url, {"name": "x"}, key="sly_test_key"), 401, "invalid_api_key")
    # Control is opt-in: off unless --control (or --control-token) is given.
    assert requests.get(f"{base}/v1/_control/events", timeout=10).status_code == 404
    reset = requests.post(f"{base}/v1/_control/reset", json={}, timeout=10)
    assert reset.status_code == 404
    # Only the host names asked for: a DNS-rebinding page's Host is refused.
    rebound = requests.get(f"{base}/v1/openapi.json", headers={"Host": "evil.example"}, timeout=10)
    assert rebound.status_code == 400
    schema = requests.get(f"{base}/v1/openapi.json", headers={"Host": "localhost"}, timeout=10)
    assert schema.json()["servers"] == [{"url": "/"}]


def test_standalone_control_needs_its_token_and_refuses_cross_origin_posts(standalone):
    _, port = standalone("--control-token", "ctl-secret")
    base = f"http://127.0.0.1:{port}"
    assert post(f"{base}/v1/events", {"name": "kept"}, key="sly_standalone").status_code == 200
    events_url = f"{base}/v1/_control/events"
    auth = {"Authorization": "Bearer ctl-secret"}
    assert_error(requests.get(events_url, timeout=10), 403, "forbidden")
    assert_error(
        requests.get(events_url, headers={"Authorization": "Bearer nope"}, timeout=10),
        403,
        "forbidden",
    )
    listed = requests.get(events_url, headers=auth, timeout=10).json()
    assert [e["name"] for e in listed["events"]] == ["kept"]
    # What a web page can send without a preflight: a text/plain POST, from another origin.
    simple = requests.post(
        f"{base}/v1/_control/reset",
        data="{}",
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
        timeout=10,
    )
    assert simple.status_code in (403, 415)
    assert requests.get(events_url, headers=auth, timeout=10).json()["count"] == 1


def test_every_reset_forgets_received_events_unless_asked_to_keep_them(url, supalytics_receiver):
    base = supalytics_receiver.base_url
    assert post(url, {"name": "a"}).status_code == 200
    requests.delete(f"{base}/v1/_control/faults", json={}, timeout=10).raise_for_status()
    assert supalytics_receiver.events().count() == 1  # DELETE faults keeps the events
    faults.reset(received=False)
    assert supalytics_receiver.events().count() == 1
    faults.reset()  # like POST /v1/_control/reset
    assert supalytics_receiver.events().count() == 0
    assert post(url, {"name": "b"}).status_code == 200
    requests.post(f"{base}/v1/_control/reset", json={}, timeout=10).raise_for_status()
    assert supalytics_receiver.events().count() == 0
