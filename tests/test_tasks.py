import math
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from django_supalytics import tasks, track
from django_supalytics.backends.locmem import HandOver
from django_supalytics.models import OutboxEvent

pytestmark = pytest.mark.django_db


def test_sweep_re_enqueues_rows_due_for_longer_than_the_grace(published):
    lost = track("lost")
    track("fresh")  # due, but not for longer than the grace
    OutboxEvent.objects.filter(pk=lost.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=5)
    )
    result = tasks.sweep_outbox()
    assert result == {"reclaimed": 0, "enqueued": 1}
    assert [h.event_ids for h in published] == [(lost.pk,)]


def test_sweep_reclaims_expired_leases(published):
    event = track("stuck")
    OutboxEvent.objects.filter(pk=event.pk).update(
        status="sending",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
        next_attempt_at=timezone.now() - timedelta(minutes=5),
    )
    assert tasks.sweep_outbox() == {"reclaimed": 1, "enqueued": 1}
    assert OutboxEvent.objects.get(pk=event.pk).status == "pending"


def test_sweep_survives_a_broker_that_is_down(broker):
    broker.refusals = math.inf
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
    [wake_up] = published  # a drain for when the row is due again
    assert wake_up.event_ids == ()
    wait = (OutboxEvent.objects.get(pk=event.pk).next_attempt_at - timezone.now()).total_seconds()
    assert wake_up.countdown is not None and wait <= wake_up.countdown <= 2.6  # never early


def test_a_long_429_wait_is_taken_in_max_countdown_steps(published, endpoint, settings):
    """A 429 asking 30 s: every sender pauses 30 s, and the row's wake-up comes within
    MAX_COUNTDOWN (a 31-60 s wait once published nothing and waited for the sweeper)."""
    from tests.httpserver import Answer

    settings.SUPALYTICS = {**settings.SUPALYTICS, "MAX_COUNTDOWN": 1.0}
    endpoint.script(Answer(429, {"error": "slow down"}, {"Retry-After": "30"}))
    event = track("e")
    assert tasks.deliver_event(event.pk) == "rate_limited"
    [wake_up] = published
    assert wake_up.countdown is not None and 1.0 <= wake_up.countdown <= 1.6
    OutboxEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())
    assert tasks.deliver_event(event.pk) == "deferred"  # still paused: held again, no request
    assert len(endpoint.requests) == 1
    assert OutboxEvent.objects.get(pk=event.pk).attempts == 0


def test_purge_task_uses_retention(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "RETENTION_DAYS": 1}
    old = track("old")
    OutboxEvent.objects.filter(pk=old.pk).update(
        status="sent", sent_at=timezone.now() - timedelta(days=2)
    )
    assert tasks.purge_outbox() == 1


@pytest.mark.django_db(transaction=True)  # a retry needs a connection outside any transaction
def test_a_delivery_task_waits_out_a_transient_database_error(endpoint, settings):
    """'database is locked' at the claim: the database retry layer claims again at once; the
    task itself is not retried (Celery's retries are not used)."""
    from django.db import OperationalError

    from django_supalytics.queryset import OutboxEventQuerySet

    events = [track(f"e{i}") for i in range(2)]
    real_claim = OutboxEventQuerySet.claim
    failures: list[int] = []

    def locked_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise OperationalError("database is locked")
        return real_claim(*args, **kwargs)

    with mock.patch.object(OutboxEventQuerySet, "claim", locked_once):
        tasks.deliver_events.apply(args=([e.pk for e in events],))
    assert failures == [1]
    assert set(OutboxEvent.objects.values_list("status", flat=True)) == {"sent"}
    assert not hasattr(tasks.deliver_events, "autoretry_for")


@pytest.mark.django_db(databases=["default", "other"])
def test_sweep_covers_every_outbox_database(published, settings):
    from django_supalytics.models import db_now

    settings.SUPALYTICS = {**settings.SUPALYTICS, "OUTBOX_DATABASES": ["other"]}
    lost = track("lost", using="other")
    OutboxEvent.objects.using("other").filter(pk=lost.pk).update(next_attempt_at=db_now(-300))
    assert tasks.sweep_outbox() == {"reclaimed": 0, "enqueued": 1}
    assert published[-1] == HandOver((lost.pk,), None, "other")


def test_purge_task_keeps_failed_rows_for_their_own_retention(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "RETENTION_DAYS": 1, "FAILED_RETENTION_DAYS": 3}
    failed = track("failed")
    OutboxEvent.objects.filter(pk=failed.pk).update(
        status="failed", failed_at=timezone.now() - timedelta(days=2)
    )
    assert tasks.purge_outbox() == 0
    OutboxEvent.objects.filter(pk=failed.pk).update(failed_at=timezone.now() - timedelta(days=4))
    assert tasks.purge_outbox() == 1


def test_a_sweep_hands_over_a_minute_at_the_rate_limit_in_batches(published, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "RATE_LIMIT": 1, "BATCH_SIZE": 25}
    OutboxEvent.objects.bulk_create([OutboxEvent(name=f"backlog{i}") for i in range(70)])
    OutboxEvent.objects.update(next_attempt_at=timezone.now() - timedelta(minutes=5))
    assert tasks.sweep_outbox()["enqueued"] == 60  # RATE_LIMIT x 60
    assert [len(h.event_ids) for h in published] == [25, 25, 10]
