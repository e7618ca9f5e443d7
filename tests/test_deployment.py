"""The package as it is deployed: gunicorn workers (with and without --preload) track events in
requests; the background publisher of each worker process hands them to a real Celery worker,
which delivers them to the mock receiver."""

import pytest
import requests

from django_supalytics.models import OutboxEvent
from tests.processes import free_port, start_server_process, start_worker_process, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-import", "preload"])
def test_gunicorn_workers_publish_what_requests_track(supalytics_receiver, processes, preload):
    processes.append(start_worker_process(supalytics_receiver.url))
    port = free_port()
    argv = ["-m", "gunicorn", "testproject.wsgi:application", "--bind", f"127.0.0.1:{port}"]
    argv += ["--workers", "2", "--graceful-timeout", "10", *(["--preload"] if preload else [])]
    # The path a site takes: the publisher thread, started in each worker process after fork.
    server = start_server_process(argv, port, SUPALYTICS_ENQUEUE="background")
    processes.append(server)
    url = f"http://127.0.0.1:{port}/webhooks/payment/"
    session = requests.Session()
    for amount in range(12):
        answer = session.post(url, json={"amount": amount, "currency": "EUR"}, timeout=10)
        assert answer.status_code == 200, answer.text

    # The receiver stores an event before the worker records its answer: wait for both.
    wait_for(lambda: OutboxEvent.objects.filter(status="sent").count() == 12, timeout=60)
    amounts = sorted(e.metadata["amount"] for e in supalytics_receiver.events())
    assert amounts == list(range(12))
    server.stop()  # graceful: each worker flushes its publisher at exit
    assert "could not enqueue" not in server.output()
