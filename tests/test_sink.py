"""The sink ``bench/delivery.py capacity --sink`` sends to: answers every POST, counts keys."""

import requests

from tests.processes import free_port, start_server_process


def test_it_answers_every_post_and_keeps_each_key_as_it_came(processes):
    port = free_port()
    processes.append(start_server_process(["bench/sink.py", "--port", str(port)], port))
    url = f"http://127.0.0.1:{port}"
    with requests.Session() as session:  # keep-alive: several requests on one connection
        for key in ["a", "b", "a"]:
            response = session.post(
                f"{url}/v1/events", json={"event": "x"}, headers={"Idempotency-Key": key}
            )
            assert (response.status_code, response.json()) == (200, {"success": True})
        keys = session.get(f"{url}/keys").json()
    # A key sent twice is listed twice: the benchmark counts it as stored twice.
    assert [key for key, _ in keys] == ["a", "b", "a"]
    assert keys[0][1] <= keys[1][1] <= keys[2][1]
