import threading
import time
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from django_supalytics import delivery, track
from django_supalytics.models import OutboxEvent
from django_supalytics.ratelimit import Reservation
from django_supalytics.signals import event_delivered, event_failed
from tests.httpserver import DROP, Answer

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_publish(published):
    return published


def _reload(event):
    return OutboxEvent.objects.get(pk=event.pk)


def test_delivered_event_is_marked_sent_with_its_uuid_as_idempotency_key(endpoint):
    event = track("subscription_created", visitor_id="v1", metadata={"plan": "pro"})
    result = delivery.deliver(event.pk)
    row = _reload(event)
    assert result.outcome == "sent"
    assert (row.status, row.attempts, row.last_status_code) == ("sent", 1, 200)
    assert row.sent_at is not None and row.lease_owner is None
    [request] = endpoint.requests
    assert request.headers["Idempotency-Key"] == str(event.uuid)
    assert request.json == {
        "name": "subscription_created",
        "visitor_id": "v1",
        "metadata": {"plan": "pro"},
    }


def test_500_then_200_delivers_once_with_attempts_recorded(endpoint):
    endpoint.script(Answer(500, {"error": "boom"}))
    event = track("e")
    first = delivery.deliver(event.pk)
    row = _reload(event)
    assert (first.outcome, row.status, row.attempts, row.last_status_code) == (
        "retry",
        "pending",
        1,
        500,
    )
    assert row.last_error == "boom"
    assert first.retry_in is not None and 0 <= first.retry_in <= 2.0
    OutboxEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())
    assert delivery.deliver(event.pk).outcome == "sent"
    row = _reload(event)
    assert (row.status, row.attempts) == ("sent", 2)
    keys = {r.headers["Idempotency-Key"] for r in endpoint.requests}
    assert keys == {str(event.uuid)}


def test_400_fails_for_good_without_retry(endpoint):
    endpoint.script(
        Answer(
            400,
            {
                "success": False,
                "error": {"code": "invalid_name", "message": "bad name", "field": "name"},
            },
        )
    )
    event = track("e")
    result = delivery.deliver(event.pk)
    row = _reload(event)
    assert (result.outcome, result.retry_in) == ("failed", None)
    assert (row.status, row.last_status_code, row.last_error) == (
        "failed",
        400,
        "invalid_name: bad name",
    )
    assert delivery.deliver(event.pk).outcome == "skipped"
    assert len(endpoint.requests) == 1


def test_429_waits_as_told_without_spending_an_attempt(endpoint):
    endpoint.script(Answer(429, {"error": "rate_limited"}, {"Retry-After": "2"}))
    event = track("e")
    result = delivery.deliver(event.pk)
    row = _reload(event)
    assert (result.outcome, result.retry_in) == ("rate_limited", 2.0)
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 0, 429)
    assert row.next_attempt_at > timezone.now() + timedelta(seconds=1.5)
    # Every worker sharing the key is paused, not only this one:
    other = track("other")
    assert delivery.deliver(other.pk).outcome == "deferred"
    assert len(endpoint.requests) == 1


def test_429_then_delivered_after_the_wait(endpoint):
    endpoint.script(Answer(429, {"error": "rate_limited"}, {"Retry-After": "1"}))
    event = track("e")
    delivery.deliver(event.pk)
    assert delivery.deliver(event.pk).outcome == "deferred"  # not due yet
    time.sleep(1.05)  # the pause the 429 asked for
    assert delivery.deliver(event.pk).outcome == "sent"
    assert _reload(event).attempts == 1


def test_connection_refused_is_retried(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENDPOINT": "http://127.0.0.1:9/v1/events"}
    event = track("e")
    result = delivery.deliver(event.pk)
    row = _reload(event)
    assert (result.outcome, row.status, row.attempts, row.last_status_code) == (
        "retry",
        "pending",
        1,
        None,
    )
    assert "ConnectionError" in row.last_error


def test_dropped_connection_is_retried(endpoint):
    endpoint.script(DROP)
    event = track("e")
    assert delivery.deliver(event.pk).outcome == "retry"


def test_gives_up_after_the_attempt_budget(endpoint, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "MAX_ATTEMPTS": 3}
    endpoint.script(*[Answer(503, {"error": "down"})] * 3)
    event = track("e")
    outcomes = []
    for _ in range(3):
        OutboxEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())
        outcomes.append(delivery.deliver(event.pk).outcome)
    row = _reload(event)
    assert outcomes == ["retry", "retry", "failed"]
    assert (row.status, row.attempts) == ("failed", 3)
    assert row.last_error.startswith("gave up after 3 attempts")


def test_event_not_yet_due_is_not_sent(endpoint):
    event = track("e")
    OutboxEvent.objects.filter(pk=event.pk).update(
        next_attempt_at=timezone.now() + timedelta(minutes=1)
    )
    result = delivery.deliver(event.pk)
    assert result.outcome == "deferred"
    assert result.retry_in is not None and 55 < result.retry_in <= 60
    assert not endpoint.requests


def test_a_lost_lease_does_not_overwrite_the_new_holder(endpoint):
    event = track("e")
    [claimed] = delivery.claim([event.pk])
    # The lease runs out and another worker claims and sends the row.
    OutboxEvent.objects.filter(pk=event.pk).update(lease_expires_at=timezone.now())
    assert delivery.deliver(event.pk).outcome == "sent"
    stale = delivery.send(claimed)
    assert stale.outcome == "skipped"
    assert _reload(event).status == "sent"


def test_disabled_delivery_keeps_events_pending(endpoint, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENABLED": False}
    event = track("e")
    assert delivery.deliver(event.pk).outcome == "deferred"
    row = _reload(event)
    assert (row.status, row.attempts) == ("pending", 0)
    assert "ENABLED" in row.last_error
    assert not endpoint.requests


def test_missing_key_keeps_events_pending(endpoint, settings, monkeypatch):
    monkeypatch.delenv("SUPALYTICS_API_KEY", raising=False)
    settings.SUPALYTICS = {**settings.SUPALYTICS, "API_KEY": None}
    event = track("e")
    assert delivery.deliver(event.pk).outcome == "deferred"
    assert _reload(event).status == "pending"


def test_api_key_from_the_environment(endpoint, settings, monkeypatch):
    monkeypatch.setenv("SUPALYTICS_API_KEY", "sly_from_env")
    settings.SUPALYTICS = {**settings.SUPALYTICS, "API_KEY": None}
    delivery.deliver(track("e").pk)
    assert endpoint.requests[0].headers["Authorization"] == "Bearer sly_from_env"


@pytest.mark.parametrize("raw", ["sly_test_key\n", "sly_test_key\r\n", "  sly_test_key \t"])
def test_surrounding_whitespace_of_the_key_is_stripped(endpoint, settings, monkeypatch, raw):
    # A Kubernetes secret file or a CRLF .env leaves a newline at the end of the key.
    monkeypatch.setenv("SUPALYTICS_API_KEY", raw)
    settings.SUPALYTICS = {**settings.SUPALYTICS, "API_KEY": None}
    event = track("e")
    assert delivery.deliver(event.pk).outcome == "sent"
    assert endpoint.requests[0].headers["Authorization"] == "Bearer sly_test_key"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("sly_secret\nX-Injected: 1", "contains a newline"),
        ("sly_secret\rabc", "contains a newline"),
        ("sly_secret_\u043a\u043b\u044e\u0447", "invalid characters"),  # not latin-1
        ("sly_secret_caf\u00e9", "invalid characters"),  # latin-1, not ASCII
        ("sly_secret with space", "invalid characters"),
        ("sly_secret\x00", "invalid characters"),
    ],
)
def test_an_unusable_key_defers_rows_and_is_never_written_out(
    endpoint, settings, caplog, key, problem
):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "API_KEY": key}
    events = [track("e"), track("f")]
    results = delivery.deliver_many([e.pk for e in events])  # never raises
    assert [r.outcome for r in results] == ["deferred", "deferred"]
    for event in events:
        row = _reload(event)
        # Waiting for the key to be fixed, like "no API key": not stuck in "sending".
        assert (row.status, row.attempts, row.lease_owner) == ("pending", 0, None)
        assert problem in row.last_error
        assert "sly_secret" not in row.last_error
    assert "sly_secret" not in caplog.text
    assert problem in caplog.text
    assert not endpoint.requests


def test_signals_are_sent_and_a_broken_receiver_cannot_break_delivery(endpoint, caplog):
    seen = []

    def broken(sender, event, **kwargs):
        raise RuntimeError("receiver bug")

    def record(sender, event, **kwargs):
        seen.append((event.name, kwargs.get("error")))

    endpoint.script(Answer(200), Answer(400, {"error": "bad"}))
    event_delivered.connect(broken)
    event_delivered.connect(record)
    event_failed.connect(record)
    try:
        assert delivery.deliver(track("good").pk).outcome == "sent"
        assert delivery.deliver(track("bad").pk).outcome == "failed"
    finally:
        event_delivered.disconnect(broken)
        event_delivered.disconnect(record)
        event_failed.disconnect(record)
    assert seen == [("good", None), ("bad", "bad")]
    assert "receiver bug" in caplog.text


def test_deliver_due_sends_oldest_first(endpoint, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "SEND_CONCURRENCY": 1}
    events = [track(f"e{i}") for i in range(5)]
    results = delivery.deliver_due(limit=100)
    assert [r.event_id for r in results] == [e.pk for e in events]
    assert [r.json["name"] for r in endpoint.requests] == [f"e{i}" for i in range(5)]


def test_reclaim_expired_returns_abandoned_rows():
    event = track("e")
    delivery.claim([event.pk])
    assert delivery.reclaim_expired() == 0
    OutboxEvent.objects.filter(pk=event.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert delivery.reclaim_expired() == 1
    assert _reload(event).status == "pending"


def test_purge_deletes_old_sent_rows_only():
    old = timezone.now() - timedelta(days=30)
    sent_old = track("a")
    sent_new = track("b")
    failed_old = track("c")
    pending = track("d")
    OutboxEvent.objects.filter(pk=sent_old.pk).update(status="sent", sent_at=old)
    OutboxEvent.objects.filter(pk=sent_new.pk).update(status="sent", sent_at=timezone.now())
    OutboxEvent.objects.filter(pk=failed_old.pk).update(status="failed", created_at=old)
    assert delivery.purge(timedelta(days=7), batch_size=1) == 1
    assert set(OutboxEvent.objects.values_list("name", flat=True)) == {"b", "c", "d"}
    assert delivery.purge(timedelta(days=7), include_failed=True) == 1
    assert OutboxEvent.objects.filter(pk=pending.pk).exists()


def test_a_batch_is_sent_concurrently_and_recorded_in_order(endpoint, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "SEND_CONCURRENCY": 4}
    endpoint.script(Answer(200), Answer(500, {"error": "x"}), Answer(200), Answer(200))
    events = [track(f"c{i}") for i in range(8)]
    results = delivery.deliver_due(limit=100)
    assert [r.event_id for r in results] == [e.pk for e in events]
    assert sorted(r.outcome for r in results) == ["retry"] + ["sent"] * 7
    assert {r.json["name"] for r in endpoint.requests} == {e.name for e in events}


def test_a_deferred_slot_hands_back_the_rest_of_the_batch(endpoint, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "SEND_CONCURRENCY": 1}
    events = [track(f"d{i}") for i in range(3)]
    reservations = [Reservation(True, 0.0), Reservation(False, 5.0)]
    with (
        mock.patch(
            "django_supalytics.ratelimit.RedisRateLimiter.reserve", side_effect=reservations
        ),
        mock.patch(
            "django_supalytics.ratelimit.LocalRateLimiter.reserve", side_effect=reservations
        ),
    ):
        results = delivery.deliver_due(limit=10)
    assert [r.outcome for r in results] == ["sent", "deferred", "deferred"]
    assert [r.retry_in for r in results[1:]] == [5.0, 5.0]
    for event in events[1:]:
        row = _reload(event)
        assert (row.status, row.attempts, row.lease_owner) == ("pending", 0, None)
        assert row.next_attempt_at > timezone.now() + timedelta(seconds=4)
    assert len(endpoint.requests) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_never_claim_the_same_row():
    from django.db import connection

    events = [track(f"e{i}") for i in range(60)]
    claimed: list[list[int]] = []
    barrier = threading.Barrier(4)

    def claimer():
        try:
            barrier.wait()
            mine: list[int] = []
            while batch := delivery.claim(limit=3):
                mine.extend(e.pk for e in batch)
            claimed.append(mine)
        finally:
            connection.close()

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [pk for mine in claimed for pk in mine]
    assert sorted(every) == sorted(e.pk for e in events)  # each row exactly once
    assert sum(1 for mine in claimed if mine) >= 2  # and the work was really shared


def test_outcomes_in_hand_survive_a_transient_database_error(endpoint):
    """An answer already obtained is recorded even if the first try to record it fails."""
    from django.db import OperationalError

    event = track("e")
    real_update = delivery._update
    calls = []

    def flaky(row, outcome):
        calls.append(row.pk)
        if len(calls) == 1:
            raise OperationalError("database is locked")
        return real_update(row, outcome)

    with mock.patch.object(delivery, "_update", flaky):
        result = delivery.deliver(event.pk)
    assert result.outcome == "sent"
    assert _reload(event).status == "sent"
    assert len(endpoint.requests) == 1  # recorded on the second try, not POSTed again


@pytest.mark.redis
def test_a_limiter_store_that_is_down_pauses_sending(endpoint, settings):
    """Redis unreachable: no request goes out unlimited; the rows wait a moment, pending."""
    from tests.processes import free_port

    settings.CACHES = {
        **settings.CACHES,
        "gone": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        },
    }
    settings.SUPALYTICS = {**settings.SUPALYTICS, "CACHE_ALIAS": "gone"}
    events = [track(f"e{i}") for i in range(3)]
    results = delivery.deliver_many([e.pk for e in events])
    assert {r.outcome for r in results} == {"deferred"}
    assert all(0 < (r.retry_in or 0) <= delivery.LIMITER_DOWN_PAUSE for r in results)
    assert endpoint.requests == []
    for event in events:
        row = _reload(event)
        assert (row.status, row.attempts) == ("pending", 0)
        assert "rate limiter unavailable" in row.last_error


@pytest.fixture
def outage_settings(endpoint, settings):
    settings.SUPALYTICS = {
        **settings.SUPALYTICS,
        "OUTAGE_THRESHOLD": 3,
        "OUTAGE_PROBE_BASE": 0.3,
        "SEND_CONCURRENCY": 1,
    }
    from django_supalytics import outage

    outage.LocalCircuit._states.clear()
    return endpoint


def test_an_api_failing_for_everyone_stops_sending_without_spending_attempts(outage_settings):
    outage_settings.script(*[Answer(503, {"error": "down"})] * 20)
    events = [track(f"e{i}") for i in range(8)]
    results = delivery.deliver_many([e.pk for e in events])
    assert len(outage_settings.requests) == 3  # the failures that opened the circuit
    rows = [_reload(e) for e in events]
    assert [r.attempts for r in rows] == [1, 1, 1, 0, 0, 0, 0, 0]
    assert all(r.status == "pending" for r in rows)
    assert all("the API is failing" in r.last_error for r in rows[3:])
    assert {r.outcome for r in results[3:]} == {"deferred"}


def test_one_probe_then_the_backlog_goes_when_the_api_heals(outage_settings):
    outage_settings.script(*[Answer(503, {"error": "down"})] * 4)  # 3 to open, 1 probe
    events = [track(f"e{i}") for i in range(6)]
    pks = [e.pk for e in events]
    delivery.deliver_many(pks)
    OutboxEvent.objects.update(next_attempt_at=timezone.now())
    time.sleep(0.35)
    delivery.deliver_many(pks)  # the probe fails: open again, for twice as long
    assert len(outage_settings.requests) == 4
    assert sum(r.attempts for r in OutboxEvent.objects.all()) == 4
    OutboxEvent.objects.update(next_attempt_at=timezone.now())
    time.sleep(0.65)
    delivery.deliver_many(pks)  # the probe succeeds; the rest follow at once
    assert set(OutboxEvent.objects.values_list("status", flat=True)) == {"sent"}
    assert len(outage_settings.requests) == 4 + 6


def test_a_pause_set_meanwhile_stops_a_slot_reserved_before_it(endpoint, settings):
    """Worker A reserved a slot 0.3 s ahead; worker B's 429 pauses everyone meanwhile."""
    from django_supalytics.ratelimit import get_limiter

    settings.SUPALYTICS = {**settings.SUPALYTICS, "RATE_LIMIT": 3}
    limiter = get_limiter(settings.SUPALYTICS["API_KEY"])
    assert limiter.reserve(1.0).granted  # the slot now is taken: the next is 0.33 s away
    event = track("e")

    def sleep_then_someone_pauses(seconds):
        time.sleep(seconds)
        limiter.pause(5.0)

    result = delivery.deliver_many([event.pk], sleep=sleep_then_someone_pauses)[0]
    assert result.outcome == "deferred" and 4 < (result.retry_in or 0) <= 5
    assert endpoint.requests == []
    assert _reload(event).attempts == 0
