"""Priority lanes (live before bulk) and the age limit (``MAX_AGE``)."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db.models import F

from django_supalytics import delivery, stats, track
from django_supalytics.models import OutboxEvent
from django_supalytics.tasks import purge_expired

pytestmark = pytest.mark.django_db
Priority = OutboxEvent.Priority


def _age(events, seconds):
    """Make rows older: created, and due, ``seconds`` ago."""
    ago = timedelta(seconds=seconds)
    OutboxEvent.objects.filter(pk__in=[e.pk for e in events]).update(
        created_at=F("created_at") - ago, next_attempt_at=F("next_attempt_at") - ago
    )


def test_track_writes_live_rows_unless_told_bulk():
    assert track("live").priority == Priority.LIVE
    bulk = track("import", bulk=True)
    assert OutboxEvent.objects.get(pk=bulk.pk).priority == Priority.BULK


def test_a_claim_takes_live_rows_before_older_bulk_ones_and_oldest_first_in_a_lane():
    bulk = [track(f"bulk{i}", bulk=True) for i in range(3)]
    _age(bulk, 3600)
    _age(bulk[:1], 60)  # the oldest bulk row
    live = [track(f"live{i}") for i in range(2)]
    _age(live[:1], 10)
    claimed = OutboxEvent.objects.claim(4)
    assert [e.name for e in claimed] == ["live0", "live1", "bulk0", "bulk1"]


def test_bulk_rows_get_the_whole_claim_when_nothing_live_is_due():
    bulk = [track(f"bulk{i}", bulk=True) for i in range(3)]
    later = track("live")
    OutboxEvent.objects.filter(pk=later.pk).update(
        next_attempt_at=F("next_attempt_at") + timedelta(hours=1)
    )
    assert {e.pk for e in OutboxEvent.objects.claim(10)} == {e.pk for e in bulk}


def test_a_drain_sends_a_live_row_before_the_bulk_backlog(endpoint, settings):
    """A task handed 30 bulk rows claims a few of them, then what is due, live first: the live
    row is among the first requests, not behind the backlog."""
    settings.SUPALYTICS = {**settings.SUPALYTICS, "SEND_CONCURRENCY": 1}
    bulk = [track(f"bulk{i}", bulk=True) for i in range(30)]
    _age(bulk, 60)
    track("signup")
    results = delivery.deliver_many([e.pk for e in bulk], drain=True)
    names = [request.json["name"] for request in endpoint.requests]
    assert len(names) == 31 and {r.outcome for r in results} == {"sent"}
    assert names.index("signup") <= 2  # after the first claim (two rows: 2 x concurrency)


def test_backfill_writes_bulk_rows(django_user_model):
    from testproject.shop.models import Subscription

    user = django_user_model.objects.create(username="b")
    for _ in range(2):
        Subscription.objects.create(user=user, plan="pro", amount=29)
    call_command("supalytics_backfill", "shop.Subscription", "--event", "subscription_existing")
    rows = OutboxEvent.objects.filter(name="subscription_existing")
    assert rows.count() == 2 and set(rows.values_list("priority", flat=True)) == {Priority.BULK}
    assert set(
        OutboxEvent.objects.exclude(name="subscription_existing").values_list("priority", flat=True)
    ) == {Priority.LIVE}  # the signal handlers' events


def test_a_row_older_than_its_max_age_expires_instead_of_being_sent(endpoint, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "MAX_AGE": {"page_viewed": 60}}
    stale, fresh = track("page_viewed"), track("page_viewed")
    old_payment = track("payment")  # no limit for its name: never expires
    _age([stale, old_payment], 3600)
    results = delivery.deliver_due(10)
    assert {r.event_id for r in results} == {fresh.pk, old_payment.pk}
    assert sorted(r.json["name"] for r in endpoint.requests) == ["page_viewed", "payment"]
    row = OutboxEvent.objects.get(pk=stale.pk)
    assert (row.status, row.attempts, row.lease_owner) == ("expired", 0, None)
    assert stats.summary().counts["expired"] == 1


def test_expired_rows_are_purged_with_the_sent_ones(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "RETENTION_DAYS": 7}
    old, recent = track("page_viewed"), track("page_viewed")
    OutboxEvent.objects.filter(pk__in=[old.pk, recent.pk]).update(status="expired")
    _age([old], 8 * 86400)
    assert purge_expired() == 1
    assert list(OutboxEvent.objects.values_list("pk", flat=True)) == [recent.pk]
