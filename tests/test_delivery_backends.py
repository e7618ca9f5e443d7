"""SUPALYTICS["DELIVERY_BACKEND"]: Celery (default), Django's Tasks framework, or none."""

import logging
from importlib.util import find_spec

import pytest
from django.core.management import call_command
from django.db import transaction

from django_supalytics import track
from django_supalytics.dispatch import publisher
from django_supalytics.models import OutboxEvent
from tests.httpserver import Answer
from tests.processes import ChildProcess, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def backend(settings):
    def choose(name, **extra):
        settings.SUPALYTICS = {**settings.SUPALYTICS, "DELIVERY_BACKEND": name, **extra}

    return choose


def test_none_hands_nothing_to_any_queue_and_drain_sends(backend, endpoint, published, caplog):
    backend("none", ENQUEUE="background")
    with caplog.at_level(logging.WARNING, logger="django_supalytics"), transaction.atomic():
        event = track("cron_only")
    assert publisher.flush()
    assert not published.called
    assert not caplog.records  # no broker tried, no traceback logged
    assert OutboxEvent.objects.get(pk=event.pk).status == "pending"
    call_command("supalytics_drain", verbosity=0)
    assert OutboxEvent.objects.get(pk=event.pk).status == "sent"
    assert len(endpoint.requests) == 1


def test_django_tasks_delivers_on_commit_with_the_immediate_backend(
    backend, endpoint, published, settings
):
    framework = "django.tasks" if find_spec("django.tasks") else "django_tasks"
    settings.TASKS = {"default": {"BACKEND": f"{framework}.backends.immediate.ImmediateBackend"}}
    backend("django_tasks")
    with transaction.atomic():
        event = track("via_tasks")
        assert not endpoint.requests  # nothing before the commit
    assert OutboxEvent.objects.get(pk=event.pk).status == "sent"
    assert not published.called  # Celery was never asked
    assert [r.headers["Idempotency-Key"] for r in endpoint.requests] == [str(event.uuid)]


def test_a_task_run_inline_sends_only_its_own_rows(backend, endpoint, settings):
    """On the committing thread (Celery's eager apply(), Django's ImmediateBackend) a task does
    not drain other due rows: the request would wait for them."""
    from django_supalytics import tasks
    from django_supalytics.delivery import DRAIN_POLL

    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENABLED": False}
    waiting = [track(f"waiting{i}") for i in range(3)]  # due, and not sent (delivery is off)
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENABLED": True}
    endpoint.script(*[Answer(200, delay=5 * DRAIN_POLL) for _ in range(5)])
    mine = track("mine")
    tasks.deliver_events.apply(args=([mine.pk],))
    assert len(endpoint.requests) == 1
    framework = "django.tasks" if find_spec("django.tasks") else "django_tasks"
    settings.TASKS = {"default": {"BACKEND": f"{framework}.backends.immediate.ImmediateBackend"}}
    backend("django_tasks")
    with transaction.atomic():
        track("mine_too")
    assert len(endpoint.requests) == 2
    assert {OutboxEvent.objects.get(pk=e.pk).status for e in waiting} == {"pending"}
    # Run by a worker (here: called directly), the same task drains them.
    backend("celery")
    last = track("last")
    tasks.deliver_events([last.pk])
    assert {OutboxEvent.objects.get(pk=e.pk).status for e in waiting} == {"sent"}
    assert len(endpoint.requests) == 2 + 1 + 3


def test_django_tasks_rolled_back_enqueues_nothing(backend, endpoint):
    backend("django_tasks")
    with pytest.raises(RuntimeError), transaction.atomic():
        track("rolled_back")
        raise RuntimeError
    from django_tasks_db.models import DBTaskResult

    assert not DBTaskResult.objects.exists()
    assert not endpoint.requests


def test_django_tasks_defers_a_retry_with_run_after(backend, endpoint):
    from tests.httpserver import Answer

    endpoint.script(Answer(503, {"error": "down"}))
    backend("django_tasks")
    from django_tasks_db.models import DBTaskResult

    with transaction.atomic():
        event = track("retried")
    [first] = DBTaskResult.objects.all()
    from django_supalytics.tasks_framework import deliver_events

    deliver_events.call([event.pk])  # what a worker runs
    row = OutboxEvent.objects.get(pk=event.pk)
    assert (row.status, row.attempts) == ("pending", 1)
    retry = DBTaskResult.objects.exclude(pk=first.pk).get()
    assert retry.run_after is not None and retry.run_after >= row.next_attempt_at


@pytest.mark.postgres
@pytest.mark.slow
def test_a_real_db_worker_delivers_on_postgresql(backend, supalytics_receiver, processes):
    """django-tasks-db's db_worker, a real process, with no broker at all."""
    backend("django_tasks")
    worker = ChildProcess(
        ["manage.py", "db_worker", "--interval", "0.2", "--no-startup-delay", "--no-reload"],
        env={
            "SUPALYTICS_ENDPOINT": supalytics_receiver.url,
            "SUPALYTICS_TEST_OVERRIDES": '{"DELIVERY_BACKEND": "django_tasks"}',
            "SUPALYTICS_TEST_BROKER_URL": "memory://",
        },
    )
    processes.append(worker.start(lambda: True))
    with transaction.atomic():
        events = [track(f"db_worker_{i}", metadata={"i": i}) for i in range(5)]
    # The receiver stores an event before the worker records its answer: wait for both.
    wait_for(lambda: OutboxEvent.objects.filter(status="sent").count() == 5, timeout=60)
    received = set(supalytics_receiver.events().values_list("idempotency_key", flat=True))
    assert received == {str(e.uuid) for e in events}
