"""The mock receiver against hostile clients: bodies, headers, bounded storage, control."""

import json
import socket
from urllib.parse import urlsplit

import pytest
import requests

from django_supalytics.receiver import faults
from django_supalytics.receiver.models import ReceivedEvent
from tests.test_receiver import KEY, assert_error, post


@pytest.fixture
def base(supalytics_receiver):
    return supalytics_receiver.base_url


def raw_request(base, head: bytes, body: bytes = b"", *, wait_close: float = 0.0):
    """Send bytes over a socket; return (answer, closed): closed is whether the server
    closed the connection within ``wait_close`` seconds after answering (None: not waited for,
    as a connection kept open would cost the whole wait)."""
    parts = urlsplit(base)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    try:
        sock.sendall(head + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
        headers, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in headers.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            rest += sock.recv(65536)
        if not wait_close:
            return headers + b"\r\n\r\n" + rest, None
        sock.settimeout(wait_close)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        return headers + b"\r\n\r\n" + rest, closed
    finally:
        sock.close()


def head(length: bytes, *, key: str | None = KEY) -> bytes:
    lines = [
        b"POST /v1/events HTTP/1.1",
        b"Host: localhost",
        b"Content-Type: application/json",
        b"Content-Length: " + length,
    ]
    if key:
        lines.append(b"Authorization: Bearer " + key.encode())
    return b"\r\n".join(lines) + b"\r\n"


def status_and_body(answer: bytes):
    headers, _, body = answer.partition(b"\r\n\r\n")
    return int(headers.split(b" ", 2)[1]), json.loads(body)


@pytest.mark.parametrize("length", [b"1e3", b"abc", b"-5", b"0x10", b"\xd9\xa3"])
def test_malformed_content_length_is_400_not_500(base, length):
    answer, _ = raw_request(base, head(length), b'{"name": "x"}')
    status, body = status_and_body(answer)
    assert status == 400, answer
    assert body["error"]["code"] == "invalid_content_length"
    assert not ReceivedEvent.objects.exists()


def test_an_enormous_content_length_is_413(base):
    answer, _ = raw_request(base, head(b"9" * 5000), b'{"name": "x"}')
    status, body = status_and_body(answer)
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"name": "x", "metadata": {"plan": "pro\\u0000"}}', "invalid_metadata"),
        (b'{"name": "x", "metadata": {"p\\u0000": "pro"}}', "invalid_metadata"),
        (b'{"name": "x", "metadata": {"plan": "\\ud800"}}', "invalid_metadata"),
        (b'{"name": "x", "metadata": {"\\udfff": 1}}', "invalid_metadata"),
        (b'{"name": "x\\u0000"}', "invalid_name"),
        (b'{"name": "x", "visitor_id": "v\\u0000"}', "invalid_visitor_id"),
        (b'{"name": "x", "visitor_id": "\\ud800"}', "invalid_visitor_id"),
    ],
)
def test_nul_and_lone_surrogates_are_refused_and_the_list_still_works(
    base, supalytics_receiver, admin_client, body, code
):
    response = post(f"{base}/v1/events", data=body)
    assert_error(response, 400, code)
    assert not supalytics_receiver.events().exists()
    assert requests.get(f"{base}/v1/_control/events", timeout=10).status_code == 200
    assert admin_client.get("/admin/supalytics_receiver/receivedevent/").status_code == 200


@pytest.mark.parametrize("key", [KEY, None])
def test_an_oversized_body_is_refused_without_being_read(base, key):
    # 64 MiB declared, 4 KiB sent: the answer comes at once, and the server closes the
    # connection instead of waiting to read (into memory) the 64 MiB it refused.
    answer, closed = raw_request(
        base, head(str(64 * 1024 * 1024).encode(), key=key), b"x" * 4096, wait_close=5.0
    )
    status, _ = status_and_body(answer)
    assert status == (413 if key else 401)
    assert closed


def test_a_small_unread_body_keeps_the_connection_usable(base):
    session = requests.Session()
    first = session.post(f"{base}/v1/events", data=b'{"name": "a"}' + b" " * 1000, timeout=10)
    assert first.status_code == 401  # refused before reading: the rest is drained
    second = session.post(
        f"{base}/v1/events",
        json={"name": "b"},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert second.json() == {"success": True}


def test_long_idempotency_keys_are_refused_not_cut(base, supalytics_receiver):
    url = f"{base}/v1/events"
    prefix = "k" * 255
    for suffix in ("-first", "-second"):
        response = post(url, {"name": "x"}, headers={"Idempotency-Key": prefix + suffix})
        assert_error(response, 400, "invalid_idempotency_key", "Idempotency-Key")
        assert response.headers["X-RateLimit-Limit"]
    assert not supalytics_receiver.events().exists()
    assert post(url, {"name": "x"}, headers={"Idempotency-Key": prefix}).status_code == 200
    assert supalytics_receiver.events().get().idempotency_key == prefix


def test_options_is_405(base):
    response = requests.options(f"{base}/v1/events", timeout=10)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "POST"


def test_405_with_a_known_key_carries_rate_limit_headers(base):
    url = f"{base}/v1/events"
    for method in ("GET", "PUT", "DELETE", "OPTIONS"):
        known = post(url, method=method)
        assert_error(known, 405, "method_not_allowed")
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
            known.headers
        )
    unknown = post(url, method="GET", key="sly_unknown")
    assert "X-RateLimit-Limit" not in unknown.headers


def test_an_injected_429_is_rate_limited_like_a_real_one(base, supalytics_receiver):
    supalytics_receiver.inject(429, count=1)
    response = post(f"{base}/v1/events", {"name": "x"})
    assert_error(response, 429, "rate_limited")
    assert response.headers["Retry-After"] == "1"


def test_received_events_are_capped(base, settings, supalytics_receiver):
    settings.SUPALYTICS_RECEIVER = {**settings.SUPALYTICS_RECEIVER, "MAX_EVENTS": 3}
    for i in range(6):
        assert post(f"{base}/v1/events", {"name": f"e{i}"}).status_code == 200
    names = list(supalytics_receiver.events().values_list("name", flat=True))
    assert names == ["e3", "e4", "e5"]


def test_fault_rules_are_capped(base):
    for _ in range(faults.MAX_FAULTS):
        faults.inject(503, count=1, api_key="sly_nobody")
    with pytest.raises(ValueError, match="at most"):
        faults.inject(503)
    response = requests.post(f"{base}/v1/_control/faults", json={"status": 500}, timeout=10)
    assert_error(response, 400, "invalid_fault")


def test_the_control_event_list_is_paginated(base):
    for i in range(5):
        post(f"{base}/v1/events", {"name": f"e{i}"})
    url = f"{base}/v1/_control/events"
    page = requests.get(url, params={"limit": 2}, timeout=10).json()
    assert page["count"] == 5
    assert [e["name"] for e in page["events"]] == ["e0", "e1"]
    seen = [e["name"] for e in page["events"]]
    while page["next"] is not None:
        page = requests.get(url, params={"limit": 2, "after": page["next"]}, timeout=10).json()
        seen += [e["name"] for e in page["events"]]
    assert seen == [f"e{i}" for i in range(5)]
    assert_error(requests.get(url, params={"limit": "x"}, timeout=10), 400, "invalid_query")


def test_the_openapi_document_never_reflects_the_host_header(base):
    for host in ("localhost", "127.0.0.1"):
        schema = requests.get(f"{base}/v1/openapi.json", headers={"Host": host}, timeout=10)
        assert schema.json()["servers"] == [{"url": "/"}]


# Control


def test_control_refuses_simple_cross_origin_requests(base, supalytics_receiver):
    post(f"{base}/v1/events", {"name": "kept"})
    reset = f"{base}/v1/_control/reset"
    # A form or fetch() without preflight: no JSON content type.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        assert_error(
            requests.post(reset, data="{}", headers=headers, timeout=10),
            415,
            "unsupported_media_type",
        )
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        assert_error(requests.post(reset, json={}, headers=headers, timeout=10), 403, "forbidden")
    assert supalytics_receiver.events().count() == 1
    same_origin = {"Origin": base, "Sec-Fetch-Site": "same-origin"}
    assert requests.post(reset, json={}, headers=same_origin, timeout=10).status_code == 200
    assert not supalytics_receiver.events().exists()


def test_control_token_is_required_when_set(base, settings):
    settings.SUPALYTICS_RECEIVER = {**settings.SUPALYTICS_RECEIVER, "CONTROL_TOKEN": "ctl"}
    url = f"{base}/v1/_control/stats"
    assert_error(requests.get(url, timeout=10), 403, "forbidden")
    ok = requests.get(url, headers={"Authorization": "Bearer ctl"}, timeout=10)
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"status": 500, "api_key": 5}, "invalid_fault"),
        ({"status": 500, "api_key": ["a"]}, "invalid_fault"),
        ({"status": "500"}, "invalid_fault"),
        ({"status": True}, "invalid_fault"),
        ({"delay": "1"}, "invalid_fault"),
        ({"status": 500, "count": 1.5}, "invalid_fault"),
        ({"status": 500, "drop": "yes"}, "invalid_fault"),
        ({"status": 500, "fraction": None}, "invalid_fault"),
        ([1, 2], "invalid_json"),
        ("x", "invalid_json"),
    ],
)
def test_control_input_is_validated(base, body, code):
    response = requests.post(f"{base}/v1/_control/faults", json=body, timeout=10)
    assert_error(response, 400, code)


@pytest.mark.parametrize("path", ["faults", "reset"])
def test_control_deeply_nested_json_is_400(base, path):
    nested = "[" * 50_000 + "]" * 50_000
    response = requests.post(
        f"{base}/v1/_control/{path}",
        data=nested,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code in (400, 413)
    assert response.json()["success"] is False


def test_control_deeply_nested_small_json_is_400(base):
    nested = "[" * 5000 + "]" * 5000  # under the size limit, over the parser's depth
    response = requests.post(
        f"{base}/v1/_control/faults",
        data=nested,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert_error(response, 400, "invalid_json")


def test_listening_beyond_loopback_is_warned_about():
    from io import StringIO

    from django.core.management import CommandError, call_command

    err = StringIO()
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the warning, then no listening.
    with pytest.raises(CommandError, match="cannot listen"):
        call_command("supalytics_receiver", host="192.0.2.1", port=8765, stderr=err)
    assert "beyond loopback" in err.getvalue()
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("supalytics_receiver", host="127.0.0.1", port=0, stderr=err)
    assert "beyond loopback" not in err.getvalue()
