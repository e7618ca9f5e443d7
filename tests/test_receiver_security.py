"""The mock receiver against hostile clients: DNS rebinding of its control endpoint, slow and
idle connections on its standalone server, what it keeps of a key, a missing extra."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from django_supalytics.receiver.models import ReceivedEvent
from tests.processes import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent


def control(base, host=None, origin=None, token=None):
    headers = {}
    if host is not None:
        headers["Host"] = host
    if origin is not None:
        headers["Origin"] = origin
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(f"{base}/v1/_control/stats", headers=headers, timeout=10)


def assert_forbidden(response):
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == "forbidden"
    assert body["error"]["message"]


@pytest.fixture
def anyhost(settings, supalytics_receiver):
    """A project serving every Host name, as ``ALLOWED_HOSTS = ["*"]`` does."""
    settings.ALLOWED_HOSTS = ["*"]
    settings.SUPALYTICS_RECEIVER = {**settings.SUPALYTICS_RECEIVER, "CONTROL": True}
    return supalytics_receiver.base_url


def test_control_refuses_a_rebound_host_when_every_host_is_allowed(anyhost):
    # A page at attacker.example whose name now resolves to 127.0.0.1: same-origin for it.
    assert_forbidden(control(anyhost, host="attacker.example"))
    assert_forbidden(control(anyhost, host="127.attacker.example:80"))
    assert_forbidden(control(anyhost, host="attacker.example", origin="http://attacker.example"))


def test_control_refuses_an_origin_that_is_not_loopback(anyhost):
    port = anyhost.rsplit(":", 1)[1]
    assert_forbidden(control(anyhost, origin="http://attacker.example"))
    assert_forbidden(control(anyhost, host=f"localhost:{port}", origin="http://a.example"))


@pytest.mark.parametrize("host", [None, "localhost", "127.0.0.1:1", "[::1]:8000", "x.localhost"])
def test_control_answers_a_loopback_host(anyhost, host):
    assert control(anyhost, host=host).status_code == 200


def test_control_answers_a_host_allowed_by_name(anyhost, settings):
    settings.ALLOWED_HOSTS = ["*", "receiver.internal", ".test.example"]
    assert control(anyhost, host="receiver.internal").status_code == 200
    assert control(anyhost, host="ci.test.example").status_code == 200
    assert_forbidden(control(anyhost, host="attacker.example"))


def test_control_answers_any_host_that_presents_the_token(anyhost, settings):
    settings.SUPALYTICS_RECEIVER = {**settings.SUPALYTICS_RECEIVER, "CONTROL_TOKEN": "ctl"}
    assert control(anyhost, host="receiver.example", token="ctl").status_code == 200
    assert_forbidden(control(anyhost, host="receiver.example"))
    assert_forbidden(control(anyhost, host="127.0.0.1", token="wrong"))


@pytest.mark.parametrize(
    ("key", "kept"),
    [
        ("sly_live_0123456789abcdef", "sly_live"),  # the first 8
        ("sly_test_key", "sly_te"),  # 12 characters: 6, half
        ("sly_abcd", "sly_"),  # 8: half
        ("abc", "a"),  # 3: half, rounded down
        ("k", ""),  # 1: nothing
    ],
)
def test_at_most_half_of_a_key_is_kept(supalytics_receiver, settings, key, kept):
    settings.SUPALYTICS_RECEIVER = {**settings.SUPALYTICS_RECEIVER, "API_KEYS": [key]}
    response = requests.post(
        supalytics_receiver.url,
        json={"name": "a"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    event = ReceivedEvent.objects.get()
    assert event.key_prefix == kept
    assert key not in event.key_prefix + event.key_id


# The standalone server: python -m django_supalytics.receiver


def threads(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads")))


def test_idle_connections_hold_a_bounded_number_of_threads(standalone):
    # Before, 300 slow connections held 301 threads.
    proc, port = standalone()  # at most 64 connections, the default
    before = threads(proc.pid)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(100)]
    try:
        time.sleep(1)
        assert threads(proc.pid) <= before + 64
        # Beyond the bound a connection is answered at once, in the receiver's error format.
        response = requests.get(f"http://127.0.0.1:{port}/v1/openapi.json", timeout=5)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
    finally:
        for sock in idle:
            sock.close()
    wait_for(
        lambda: requests.get(f"http://127.0.0.1:{port}/v1/openapi.json", timeout=5).ok,
        timeout=10,
    )


def test_a_silent_connection_is_closed_after_the_timeout(standalone):
    proc, port = standalone("--connection-timeout", "1")
    before = threads(proc.pid)
    started = time.monotonic()
    slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
    slow[0].sendall(b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
    closed = [sock.recv(1024) for sock in slow]
    elapsed = time.monotonic() - started
    for sock in slow:
        sock.close()
    assert closed == [b""] * 20
    assert elapsed < 5
    wait_for(lambda: threads(proc.pid) <= before, timeout=5)


def test_the_default_bounds_are_ten_seconds_and_64_connections():
    from django_supalytics.receiver.server import ReceiverServer

    assert (ReceiverServer.connection_timeout, ReceiverServer.max_connections) == (10.0, 64)


def test_without_the_receiver_extra_it_names_the_extra_and_exits_2(tmp_path):
    # A rest_framework that cannot be imported, as without pip install ...[receiver].
    blocker = tmp_path / "rest_framework"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('no rest_framework here')\n")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    result = subprocess.run(
        [sys.executable, "-m", "django_supalytics.receiver", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        'The mock receiver needs the [receiver] extra: pip install "django-supalytics[receiver]"'
    ]
    assert "Traceback" not in result.stderr
