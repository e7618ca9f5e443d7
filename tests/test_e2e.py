"""A real Celery worker process delivering to a real HTTP server on a loopback socket."""

import pytest
from django.db import transaction

from django_supalytics import track
from django_supalytics.models import OutboxEvent
from tests.processes import start_worker_process, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _background_publisher(settings):
    """The path a site takes: IDs handed to the publisher thread on commit."""
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENQUEUE": "background"}


def _all_sent(count):
    return lambda: OutboxEvent.objects.filter(status="sent").count() == count


def test_worker_delivers_committed_events_with_contract_headers(server, processes):
    processes.append(start_worker_process(server.url))
    with transaction.atomic():
        events = [track(f"e2e_{i}", visitor_id=f"v{i}", metadata={"i": i}) for i in range(5)]
    wait_for(_all_sent(5), timeout=60)
    by_key = {r.headers["Idempotency-Key"]: r for r in server.requests}
    assert set(by_key) == {str(e.uuid) for e in events}
    for event in events:
        request = by_key[str(event.uuid)]
        assert request.json == event.payload
        assert request.headers["Authorization"] == "Bearer sly_test_key"
        assert request.headers["User-Agent"].startswith("django-supalytics/")
        assert request.headers["Content-Type"] == "application/json"


def test_rolled_back_events_are_never_sent(supalytics_receiver, processes):
    processes.append(start_worker_process(supalytics_receiver.url))
    with pytest.raises(RuntimeError), transaction.atomic():
        track("rolled_back")
        raise RuntimeError
    with transaction.atomic():
        track("committed")
    wait_for(lambda: supalytics_receiver.events().exists(), timeout=60)
    assert list(supalytics_receiver.events().values_list("name", flat=True)) == ["committed"]
    assert not OutboxEvent.objects.filter(name="rolled_back").exists()


def test_faults_are_retried_and_each_event_is_stored_exactly_once(
    supalytics_receiver, processes, settings
):
    processes.append(start_worker_process(supalytics_receiver.url, concurrency=4))
    supalytics_receiver.inject(500, count=4)
    supalytics_receiver.inject(drop=True, count=3)
    supalytics_receiver.inject(429, count=3)
    with transaction.atomic():
        events = [track(f"fault_{i}") for i in range(20)]
    wait_for(_all_sent(20), timeout=120)
    received = list(supalytics_receiver.events().values_list("idempotency_key", flat=True))
    assert sorted(received) == sorted(str(e.uuid) for e in events)
    retried = OutboxEvent.objects.filter(attempts__gt=1).count()
    assert retried >= 1  # the 500s and the drops cost attempts; 429s do not


@pytest.mark.mariadb
@pytest.mark.django_db(databases=["default", "mariadb"], transaction=True)
def test_worker_delivers_from_an_outbox_on_mariadb(server, processes, settings):
    """The outbox routed to MariaDB: track(), the worker's claim and record all happen there."""
    from tests.routers import OutboxRouter

    settings.DATABASE_ROUTERS = [OutboxRouter("mariadb")]
    processes.append(start_worker_process(server.url, SUPALYTICS_TEST_OUTBOX_DATABASE="mariadb"))
    with transaction.atomic(using="mariadb"):
        events = [track(f"maria_{i}", visitor_id=f"v{i}") for i in range(5)]
    rows = OutboxEvent.objects.using("mariadb")
    wait_for(lambda: rows.filter(status="sent").count() == 5, timeout=60)
    assert {r.headers["Idempotency-Key"] for r in server.requests} == {str(e.uuid) for e in events}
    assert not OutboxEvent.objects.using("default").exists()
