"""The WAN proxy the benchmarks put between workers and the receiver."""

import time
from urllib.parse import urlsplit

import requests

from tests.httpserver import Answer
from tests.processes import free_port, start_server_process


def test_it_adds_the_round_trip_and_keeps_each_connection_in_order(server, processes):
    target = urlsplit(server.url)
    port = free_port()
    argv = ["-m", "tests.wanproxy", "--port", str(port), "--target", target.netloc]
    processes.append(start_server_process([*argv, "--rtt", "0.2", "--jitter", "0.05"], port))
    server.script(*[Answer(200, {"n": n}) for n in range(5)])
    url = f"http://127.0.0.1:{port}/v1/events"
    with requests.Session() as session:  # one keep-alive connection through the proxy
        took = []
        for n in range(5):
            start = time.monotonic()
            response = session.post(url, json={"n": n}, timeout=10)
            took.append(time.monotonic() - start)
            assert response.json() == {"n": n}
    assert [r.json for r in server.requests] == [{"n": n} for n in range(5)]
    # Each way 0.1 s ± 0.05 s: a round trip of at least 0.1 s, far under a second.
    assert all(0.1 <= t < 1.0 for t in took), took
