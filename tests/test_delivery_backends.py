"""SUPALYTICS["DELIVERY_BACKEND"]: Celery (default), Django's Tasks framework, cron, locmem, or
a dotted path."""

import logging
from importlib.util import find_spec
from unittest import mock

import pytest
from django.core.management import call_command
from django.db import transaction

from django_supalytics import track
from django_supalytics.backends import get_backend
from django_supalytics.backends.celery import CeleryBackend
from django_supalytics.backends.cron import CronBackend
from django_supalytics.backends.django_tasks import DjangoTasksBackend
from django_supalytics.backends.locmem import HandOver, LocmemBackend
from django_supalytics.dispatch import publisher
from django_supalytics.models import OutboxEvent
from tests.backends import FlakyBackend
from tests.httpserver import Answer
from tests.processes import ChildProcess, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def backend(settings):
    def choose(name, **extra):
        settings.SUPALYTICS = {**settings.SUPALYTICS, "DELIVERY_BACKEND": name, **extra}

    return choose


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("celery", CeleryBackend),
        ("django_tasks", DjangoTasksBackend),
        ("cron", CronBackend),
        ("none", CronBackend),  # the old name of "cron"
        ("locmem", LocmemBackend),
        ("tests.backends.FlakyBackend", FlakyBackend),
    ],
)
def test_each_alias_and_a_dotted_path_name_a_backend(backend, name, cls):
    backend(name)
    assert type(get_backend()) is cls


def test_the_backend_is_made_once_and_again_when_the_setting_changes(backend):
    backend("locmem")
    first = get_backend()
    assert get_backend() is first
    backend("cron")
    assert isinstance(get_backend(), CronBackend)


def test_a_dotted_path_is_used_for_every_hand_over(backend, settings):
    backend("tests.backends.FlakyBackend", ENQUEUE="inline")
    FlakyBackend.reset()
    with transaction.atomic():
        event = track("custom")
    assert [h.event_ids for h in FlakyBackend.tries] == [(event.pk,)]


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_locmem_records_each_hand_over_with_its_countdown_and_database(published):
    from django_supalytics.client import Kind
    from django_supalytics.delivery import Result
    from django_supalytics.dispatch import requeue

    with transaction.atomic(using="other"):
        elsewhere = track("elsewhere", using="other")
    here = track("here")
    assert published == [
        HandOver((elsewhere.pk,), None, "other"),
        HandOver((here.pk,), None, None),
    ]
    requeue([Result(here.pk, Kind.DEFERRED, 2.0)])
    [wake_up] = published[2:]  # a drain, for the rows due then
    assert wake_up.event_ids == () and wake_up.using is None
    assert wake_up.countdown is not None and 2.0 <= wake_up.countdown <= 2.6


@pytest.mark.parametrize("name", ["cron", "none"])
def test_cron_hands_nothing_to_any_queue_and_drain_sends(backend, endpoint, caplog, name):
    backend(name, ENQUEUE="background")
    with caplog.at_level(logging.WARNING, logger="django_supalytics"), transaction.atomic():
        event = track("cron_only")
    assert publisher.flush()
    assert not caplog.records  # no broker tried, no traceback logged
    assert OutboxEvent.objects.get(pk=event.pk).status == "pending"
    call_command("supalytics_drain", verbosity=0)
    assert OutboxEvent.objects.get(pk=event.pk).status == "sent"
    assert len(endpoint.requests) == 1


def test_celery_names_one_row_deliver_event_and_more_deliver_events(settings):
    from django_supalytics import tasks

    settings.SUPALYTICS = {**settings.SUPALYTICS, "TASK_QUEUE": "analytics"}
    celery = CeleryBackend()
    with (
        mock.patch.object(tasks.deliver_event, "apply_async") as one,
        mock.patch.object(tasks.deliver_events, "apply_async") as many,
    ):
        assert celery.enqueue([1])
        assert celery.enqueue([1, 2], countdown=2.5)
        assert celery.enqueue([3], using="other")
    assert one.call_args_list == [mock.call((1,), retry=False, queue="analytics")]
    assert many.call_args_list == [
        mock.call(([1, 2],), retry=False, countdown=2.5, queue="analytics"),
        mock.call(([3], "other"), retry=False, queue="analytics"),
    ]


def test_celery_with_its_broker_down_says_so_and_does_not_raise(caplog):
    from django_supalytics import tasks

    with mock.patch.object(tasks.deliver_event, "apply_async", side_effect=OSError("down")):
        assert CeleryBackend().enqueue([1]) is False
    assert "could not enqueue" in caplog.text


def test_celery_eager_mode_runs_inline_and_cannot_defer(settings):
    assert not CeleryBackend().runs_inline
    assert CeleryBackend().supports_defer and CeleryBackend().publish_in_background
    settings.CELERY_TASK_ALWAYS_EAGER = True
    assert CeleryBackend().runs_inline
    assert not CeleryBackend().supports_defer and not CeleryBackend().publish_in_background


def test_celery_eager_mode_hands_a_retry_back_without_running_it_again(endpoint, settings):
    """Eager ``apply_async`` runs a task at once whatever its countdown: a row the task hands
    back for later must wait for the sweeper, not re-run the task inline until RecursionError."""
    from celery.signals import task_prerun

    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.CELERY_TASK_EAGER_PROPAGATES = True
    endpoint.script(Answer(503, {"error": "down"}))
    runs: list[str] = []

    def count(sender, **kwargs):
        runs.append(sender.name)

    task_prerun.connect(count, weak=False)
    try:
        with transaction.atomic():
            event = track("retried")
    finally:
        task_prerun.disconnect(count)
    assert runs == ["django_supalytics.tasks.deliver_event"]
    row = OutboxEvent.objects.get(pk=event.pk)
    assert (row.status, row.attempts) == ("pending", 1)
    assert len(endpoint.requests) == 1


def test_django_tasks_runs_inline_only_with_the_immediate_backend(settings):
    assert not DjangoTasksBackend().runs_inline  # django-tasks-db's DatabaseBackend
    assert DjangoTasksBackend().supports_defer
    framework = "django.tasks" if find_spec("django.tasks") else "django_tasks"
    settings.TASKS = {"default": {"BACKEND": f"{framework}.backends.immediate.ImmediateBackend"}}
    assert DjangoTasksBackend().runs_inline
    assert not DjangoTasksBackend().supports_defer


def test_django_tasks_delivers_on_commit_with_the_immediate_backend(backend, endpoint, settings):
    framework = "django.tasks" if find_spec("django.tasks") else "django_tasks"
    settings.TASKS = {"default": {"BACKEND": f"{framework}.backends.immediate.ImmediateBackend"}}
    backend("django_tasks")
    with transaction.atomic():
        event = track("via_tasks")
        assert not endpoint.requests  # nothing before the commit
    assert OutboxEvent.objects.get(pk=event.pk).status == "sent"
    assert [r.headers["Idempotency-Key"] for r in endpoint.requests] == [str(event.uuid)]


def test_a_task_run_inline_sends_only_its_own_rows(backend, endpoint, settings):
    """On the committing thread (Celery's eager apply(), Django's ImmediateBackend) a task does
    not drain other due rows: the request would wait for them."""
    from django_supalytics import tasks

    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENABLED": False}
    waiting = [track(f"waiting{i}") for i in range(3)]  # due, and not sent (delivery is off)
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENABLED": True}
    endpoint.script(*[Answer(200, delay=0.1) for _ in range(5)])
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
