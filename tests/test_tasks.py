from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from django_supalytics import tasks, track
from django_supalytics.models import OutboxEvent

pytestmark = pytest.mark.django_db


def test_sweep_re_enqueues_rows_due_for_longer_than_the_grace(published):
    lost = track("lost")
    fresh = track("fresh")
    OutboxEvent.objects.filter(pk=lost.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=5)
    )
    result = tasks.sweep_outbox()
    assert result == {"reclaimed": 0, "enqueued": 1}
    assert [c.args[0] for c in published.call_args_list] == [(lost.pk,)]
    assert fresh.pk not in [c.args[0][0] for c in published.call_args_list]


def test_sweep_reclaims_expired_leases(published):
    event = track("stuck")
    OutboxEvent.objects.filter(pk=event.pk).update(
        status="sending",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
        next_attempt_at=timezone.now() - timedelta(minutes=5),
    )
    assert tasks.sweep_outbox() == {"reclaimed": 1, "enqueued": 1}
    assert OutboxEvent.objects.get(pk=event.pk).status == "pending"


def test_sweep_survives_a_broker_that_is_down(published):
    published.side_effect = OSError("broker down")
    event = track("lost")
    OutboxEvent.objects.filter(pk=event.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=5)
    )
    assert tasks.sweep_outbox()["enqueued"] == 0


def test_deliver_event_re_enqueues_a_short_retry(published, endpoint):
    from tests.httpserver import Answer

    endpoint.script(Answer(503, {"error": "down"}))
    event = track("e")
    assert tasks.deliver_event(event.pk) == "retry"
    [call] = published.call_args_list
    assert call.args[0] == (event.pk,)
    assert 0 < call.kwargs["countdown"] <= 2.15  # the backoff, rounded up


def test_deliver_event_leaves_a_long_wait_to_the_sweeper(published, endpoint, settings):
    from tests.httpserver import Answer

    settings.SUPALYTICS = {**settings.SUPALYTICS, "MAX_COUNTDOWN": 1.0}
    endpoint.script(Answer(429, {"error": "slow down"}, {"Retry-After": "30"}))
    event = track("e")
    assert tasks.deliver_event(event.pk) == "rate_limited"
    assert not published.called


def test_enqueue_uses_the_configured_queue(published, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "TASK_QUEUE": "analytics"}
    assert tasks.enqueue(1) is True
    assert published.call_args.kwargs["queue"] == "analytics"


def test_purge_task_uses_retention(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "RETENTION_DAYS": 1}
    old = track("old")
    OutboxEvent.objects.filter(pk=old.pk).update(
        status="sent", sent_at=timezone.now() - timedelta(days=2)
    )
    assert tasks.purge_outbox() == 1


def test_a_delivery_task_retries_itself_after_a_transient_database_error(endpoint, settings):
    """'database is locked' at the claim: the task runs again at once, not via the sweeper."""
    from django.db import OperationalError

    from django_supalytics import delivery

    settings.CELERY_TASK_ALWAYS_EAGER = True
    events = [track(f"e{i}") for i in range(2)]
    real_claim = delivery.claim
    failures: list[int] = []

    def locked_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise OperationalError("database is locked")
        return real_claim(*args, **kwargs)

    with mock.patch.object(delivery, "claim", locked_once):
        tasks.deliver_events.apply(args=([e.pk for e in events],))
    assert failures == [1]
    assert set(OutboxEvent.objects.values_list("status", flat=True)) == {"sent"}


def test_delivery_tasks_retry_for_database_broker_and_redis_errors():
    from django.db import InterfaceError, OperationalError
    from kombu.exceptions import OperationalError as BrokerError

    for task in (tasks.deliver_event, tasks.deliver_events):
        retried = task.autoretry_for
        assert {OperationalError, InterfaceError, BrokerError} <= set(retried)
        assert task.max_retries == tasks.TRANSIENT_RETRIES
        assert ValueError not in retried


@pytest.mark.django_db(databases=["default", "other"])
def test_sweep_covers_every_outbox_database(published, settings):
    from unittest import mock

    from django_supalytics.models import db_now

    settings.SUPALYTICS = {**settings.SUPALYTICS, "OUTBOX_DATABASES": ["other"]}
    lost = track("lost", using="other")
    OutboxEvent.objects.using("other").filter(pk=lost.pk).update(next_attempt_at=db_now(-300))
    with mock.patch("django_supalytics.tasks.deliver_events.apply_async") as apply_async:
        assert tasks.sweep_outbox() == {"reclaimed": 0, "enqueued": 1}
    assert apply_async.call_args.args[0] == ([lost.pk], "other")


def test_purge_task_keeps_failed_rows_for_their_own_retention(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "RETENTION_DAYS": 1, "FAILED_RETENTION_DAYS": 3}
    failed = track("failed")
    OutboxEvent.objects.filter(pk=failed.pk).update(
        status="failed", failed_at=timezone.now() - timedelta(days=2)
    )
    assert tasks.purge_outbox() == 0
    OutboxEvent.objects.filter(pk=failed.pk).update(failed_at=timezone.now() - timedelta(days=4))
    assert tasks.purge_outbox() == 1


def test_a_sweep_hands_over_a_minute_at_the_rate_limit_in_batches(handed_over, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "RATE_LIMIT": 1, "BATCH_SIZE": 25}
    OutboxEvent.objects.bulk_create([OutboxEvent(name=f"backlog{i}") for i in range(70)])
    OutboxEvent.objects.update(next_attempt_at=timezone.now() - timedelta(minutes=5))
    assert tasks.sweep_outbox()["enqueued"] == 60  # RATE_LIMIT x 60
    assert [len(message) for message in handed_over] == [25, 25, 10]
