import io
import threading
import time
from datetime import datetime, timedelta
from unittest import mock

import pytest
from django.db import transaction
from django.utils import timezone

from django_supalytics import attempt, delivery, state, tasks, track
from django_supalytics.client import Kind, Outcome
from django_supalytics.models import OutboxEvent, db_now
from django_supalytics.ratelimit import Reservation
from django_supalytics.signals import event_delivered, event_failed
from tests.httpserver import DROP, Answer
from tests.routers import OutboxRouter

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
    """A row that fails on its own (others go through between its tries) earns its attempts."""
    settings.SUPALYTICS = {**settings.SUPALYTICS, "MAX_ATTEMPTS": 3}
    endpoint.script(*[a for _ in range(3) for a in (Answer(503, {"error": "down"}), Answer(200))])
    event = track("e")
    outcomes = []
    for _ in range(3):
        OutboxEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())
        outcomes.append(delivery.deliver(event.pk).outcome)
        assert delivery.deliver(track("healthy").pk).outcome == "sent"
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


@pytest.mark.django_db(transaction=True)
def test_a_row_claimed_again_by_the_same_drain_after_its_lease_was_lost_is_sent(endpoint, settings):
    """A row the drain holds (waiting behind a slow request) loses its lease, the sweeper
    hands it back, and the same drain claims it again under a new token: it is sent, not
    skipped and left ``sending``."""
    from django.db import connection

    settings.SUPALYTICS = {**settings.SUPALYTICS, "LEASE_SECONDS": 3, "SEND_CONCURRENCY": 1}
    others = [track(f"other{i}") for i in range(3)]
    mine = track("mine")
    endpoint.script(Answer(200, delay=1.3))  # mine: the renewal comes while it is in flight

    def sweeper():
        try:
            rows = OutboxEvent.objects.filter(pk=others[0].pk)
            deadline = time.monotonic() + 5
            while not rows.filter(status="sending").exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            rows.update(lease_expires_at=db_now(-1))  # a stall past the lease, compressed
            OutboxEvent.objects.reclaim_expired()
        finally:
            connection.close()

    rival = threading.Thread(target=sweeper)
    rival.start()
    try:
        delivery.deliver_many([mine.pk], drain=True)
    finally:
        rival.join()
    assert [_reload(e).status for e in [*others, mine]] == ["sent"] * 4


@pytest.mark.django_db(transaction=True)
def test_a_claim_whose_commit_answer_was_lost_finds_its_rows_again(endpoint):
    """The claim's COMMIT went through, then the connection dropped before its answer came
    back: the retry finds the rows it leased, and sends them, instead of claiming anew and
    leaving them held by nobody until their lease runs out."""
    from django.db import OperationalError

    from django_supalytics.queryset import OutboxEventQuerySet

    events = [track(f"e{i}") for i in range(2)]
    real_claim = OutboxEventQuerySet.claim
    calls = []

    def committed_then_connection_lost(self, *args, **kwargs):
        rows = real_claim(self, *args, **kwargs)
        calls.append(len(rows))
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return rows

    with mock.patch.object(OutboxEventQuerySet, "claim", committed_then_connection_lost):
        results = delivery.deliver_many([e.pk for e in events])
    assert sorted(r.outcome for r in results) == ["sent", "sent"]
    assert [_reload(e).status for e in events] == ["sent", "sent"]
    assert len(endpoint.requests) == 2


def test_a_lost_lease_does_not_overwrite_the_new_holder(endpoint):
    event = track("e")
    [claimed] = OutboxEvent.objects.claim(1, ids=[event.pk])
    # The lease runs out and another worker claims and sends the row.
    OutboxEvent.objects.filter(pk=event.pk).update(lease_expires_at=timezone.now())
    assert delivery.deliver(event.pk).outcome == "sent"
    [stale] = delivery.send([claimed])
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
    OutboxEvent.objects.claim(1, ids=[event.pk])
    assert OutboxEvent.objects.reclaim_expired() == 0
    OutboxEvent.objects.filter(pk=event.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert OutboxEvent.objects.reclaim_expired() == 1
    assert _reload(event).status == "pending"


def test_a_leased_rows_state_changes_are_its_own_methods(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "MAX_ATTEMPTS": 2, "BACKOFF_BASE": 0.0}
    track("m")
    [row] = OutboxEvent.objects.claim(1)
    assert row.record(Outcome(Kind.RETRY, 503, "down")) == (Kind.RETRY, 0.0)
    assert (row.status, row.attempts, row.lease_owner) == ("pending", 1, None)
    [row] = OutboxEvent.objects.claim(1)
    stale = OutboxEvent.objects.get(pk=row.pk)  # the same lease, read again
    assert row.record(Outcome(Kind.RETRY, 503, "down")) == (Kind.FAILED, None)
    assert _reload(row).status == "failed"
    assert _reload(row).last_error == "gave up after 2 attempts; last: down"
    assert stale.record(Outcome(Kind.SENT, 200)) is None  # its lease is gone: no record
    assert stale.release(1.0) is False
    track("n")
    [row] = OutboxEvent.objects.claim(1)
    assert row.release(60.0, "not sent: paused") is True
    row = _reload(row)
    assert (row.status, row.attempts, row.last_error) == ("pending", 0, "not sent: paused")
    assert row.next_attempt_at > timezone.now() + timedelta(seconds=50)


def test_purge_deletes_old_sent_rows_only():
    old = timezone.now() - timedelta(days=30)
    sent_old = track("a")
    sent_new = track("b")
    failed_old = track("c")
    pending = track("d")
    OutboxEvent.objects.filter(pk=sent_old.pk).update(status="sent", sent_at=old)
    OutboxEvent.objects.filter(pk=sent_new.pk).update(status="sent", sent_at=timezone.now())
    OutboxEvent.objects.filter(pk=failed_old.pk).update(status="failed", failed_at=old)
    week = timedelta(days=7)
    assert OutboxEvent.objects.purgeable(week).purge(batch_size=1) == 1
    assert set(OutboxEvent.objects.values_list("name", flat=True)) == {"b", "c", "d"}
    assert OutboxEvent.objects.purgeable(week, week).purge() == 1
    assert OutboxEvent.objects.filter(pk=pending.pk).exists()


def test_a_batch_is_sent_concurrently_and_recorded_in_order(endpoint, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "SEND_CONCURRENCY": 4}
    endpoint.script(Answer(200), Answer(500, {"error": "x"}), Answer(200), Answer(200))
    events = [track(f"c{i}") for i in range(8)]
    results = delivery.deliver_due(limit=100)
    assert [r.event_id for r in results] == [e.pk for e in events]
    assert sorted(r.outcome for r in results) == ["retry"] + ["sent"] * 7
    assert {r.json["name"] for r in endpoint.requests} == {e.name for e in events}


def test_a_row_is_sent_at_most_once_per_deliver_due(endpoint, settings):
    # A retry due at once (BACKOFF_BASE 0) must wait for the next call, not be sent again by
    # the next batch of the same call.
    settings.SUPALYTICS = {**settings.SUPALYTICS, "BACKOFF_BASE": 0.0}
    endpoint.script(Answer(500, {"error": "x"}), Answer(200), Answer(200))
    events = [track(f"o{i}") for i in range(2)]
    results = delivery.deliver_due(limit=100, batch_size=1)
    assert [(r.event_id, r.outcome) for r in results] == [
        (events[0].pk, "retry"),
        (events[1].pk, "sent"),
    ]
    assert len(endpoint.requests) == 2
    assert [(r.event_id, r.outcome) for r in delivery.deliver_due(limit=100)] == [
        (events[0].pk, "sent")
    ]


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


def claim_in_four_threads(using: str = "default") -> list[list[int]]:
    """Four claimers started together, each taking 3 rows at a time until none is left."""
    from django.db import connections

    claimed: list[list[int]] = []
    barrier = threading.Barrier(4)

    def claimer():
        try:
            barrier.wait()
            mine: list[int] = []
            while batch := OutboxEvent.objects.using(using).claim(3):
                mine.extend(e.pk for e in batch)
            claimed.append(mine)
        finally:
            connections[using].close()

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return claimed


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_never_claim_the_same_row():
    events = [track(f"e{i}") for i in range(60)]
    claimed = claim_in_four_threads()
    every = [pk for mine in claimed for pk in mine]
    assert sorted(every) == sorted(e.pk for e in events)  # each row exactly once
    assert sum(1 for mine in claimed if mine) >= 2  # and the work was really shared


@pytest.mark.django_db(transaction=True)  # a retry needs a connection outside any transaction
def test_outcomes_in_hand_survive_a_transient_database_error(endpoint):
    """An answer already obtained is recorded even if the first try to record it fails."""
    from django.db import OperationalError

    event = track("e")
    real_record = OutboxEvent.record
    calls = []

    def flaky(row, outcome):
        calls.append(row.pk)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real_record(row, outcome)

    with mock.patch.object(OutboxEvent, "record", flaky):
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
    assert all(0 < (r.retry_in or 0) <= attempt.LIMITER_DOWN_PAUSE for r in results)
    assert endpoint.requests == []
    for event in events:
        row = _reload(event)
        assert (row.status, row.attempts) == ("pending", 0)
        assert "rate limiter unavailable" in row.last_error


def test_a_redis_cache_without_redis_py_hands_every_row_back(endpoint, settings):
    """The limiter's client cannot even be made (the [redis] extra not installed): no request,
    and no row left ``sending``; the error names what is missing."""
    import sys

    settings.CACHES = {
        **settings.CACHES,
        "no-redis-py": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/0",
        },
    }
    settings.SUPALYTICS = {**settings.SUPALYTICS, "CACHE_ALIAS": "no-redis-py"}
    events = [track(f"e{i}") for i in range(3)]
    with mock.patch.dict(sys.modules, {"redis": None}):  # what an install without redis-py has
        results = delivery.deliver_many([e.pk for e in events])
    assert {r.outcome for r in results} == {"deferred"}
    assert endpoint.requests == []
    for event in events:
        row = _reload(event)
        assert (row.status, row.attempts) == ("pending", 0)
        assert "rate limiter unavailable" in row.last_error and "redis" in row.last_error


def test_a_2xx_whose_body_is_cut_at_the_deadline_is_sent_and_never_posted_again(endpoint, settings):
    """The status line and headers come at once (the API took the event), the body a byte
    every 100 ms, past the 0.5-s deadline: the row is sent, not retried."""
    settings.SUPALYTICS = {**settings.SUPALYTICS, "REQUEST_TIMEOUT": 0.5}
    endpoint.script(Answer(200, trickle_body=0.1))
    event = track("e")
    assert delivery.deliver(event.pk).outcome == "sent"
    OutboxEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())
    delivery.deliver(event.pk)
    assert len(endpoint.requests) == 1
    assert (_reload(event).status, _reload(event).attempts) == ("sent", 1)


def test_a_refusal_in_a_charset_python_does_not_know_still_fails_the_row(endpoint):
    """``charset=utf8mb4`` (a server's mistake): the text is read as UTF-8, and the 400 fails
    the row at once, instead of an error in the worker handing it back every 2 s."""
    endpoint.script(
        Answer(400, b'{"error": "bad"}', {"Content-Type": "application/json; charset=utf8mb4"})
    )
    event = track("e")
    assert delivery.deliver(event.pk).outcome == "failed"
    row = _reload(event)
    assert (row.status, row.attempts) == ("failed", 1) and "bad" in row.last_error


@pytest.fixture
def outage_settings(endpoint, settings, monkeypatch):
    settings.SUPALYTICS = {
        **settings.SUPALYTICS,
        "OUTAGE_PROBE_MAX": 60,
        "SEND_CONCURRENCY": 1,
    }
    from django_supalytics import outage

    monkeypatch.setattr(outage, "THRESHOLD", 3)
    monkeypatch.setattr(outage, "PROBE_BASE", 0.3)
    state.reset()
    return endpoint


@pytest.mark.django_db(transaction=True)
def test_no_request_starts_once_the_sender_stopped_not_even_a_probe(
    endpoint, settings, monkeypatch
):
    """The circuit is open and its next admission is a probe, which waits half a second for
    its slot; meanwhile handing back the other row fails (a read-only standby after a
    failover: not retried) and the send stops. The probe is not sent: nobody would record it."""
    from django.db import InternalError

    from django_supalytics import client, outage

    settings.SUPALYTICS = {**settings.SUPALYTICS, "OUTAGE_PROBE_MAX": 60, "SEND_CONCURRENCY": 2}
    monkeypatch.setattr(outage, "THRESHOLD", 3)
    monkeypatch.setattr(outage, "PROBE_BASE", 0.3)
    state.reset()
    circuit = outage.get_circuit(settings.SUPALYTICS["API_KEY"])
    for _ in range(3):
        circuit.report(ok=False, probe=False)
    time.sleep(0.35)  # the next admission is the probe
    events = [track(f"e{i}") for i in range(2)]
    log = []
    real_post = client.post_event

    def logged_post(*args, **kwargs):
        log.append("POST")
        return real_post(*args, **kwargs)

    def release_fails(row, delay, error=""):
        log.append("recording failed")
        raise InternalError("cannot execute UPDATE in a read-only transaction")

    slot = Reservation(True, 0.5)
    with (
        mock.patch("django_supalytics.ratelimit.RedisRateLimiter.reserve", return_value=slot),
        mock.patch("django_supalytics.ratelimit.LocalRateLimiter.reserve", return_value=slot),
        mock.patch.object(client, "post_event", logged_post),
        mock.patch.object(OutboxEvent, "release", release_fails),
        pytest.raises(InternalError),
    ):
        delivery.deliver_many([e.pk for e in events])
    assert "recording failed" in log and "POST" not in log, log
    assert endpoint.requests == []


def test_an_api_failing_for_everyone_stops_sending_without_spending_attempts(outage_settings):
    outage_settings.script(*[Answer(503, {"error": "down"})] * 20)
    events = [track(f"e{i}") for i in range(8)]
    results = delivery.deliver_many([e.pk for e in events])
    assert len(outage_settings.requests) == 3  # the failures that opened the circuit
    rows = [_reload(e) for e in events]
    # The third failure opened the circuit: that one, too, is the API's fault, not the row's.
    assert [r.attempts for r in rows] == [1, 1, 0, 0, 0, 0, 0, 0]
    assert all(r.status == "pending" for r in rows)
    assert "no attempt spent" in rows[2].last_error and rows[2].last_status_code == 503
    assert all("the API is failing" in r.last_error for r in rows[3:])
    assert {r.outcome for r in results[2:]} == {"deferred"}


def test_one_probe_then_the_backlog_goes_when_the_api_heals(outage_settings):
    outage_settings.script(*[Answer(503, {"error": "down"})] * 4)  # 3 to open, 1 probe
    events = [track(f"e{i}") for i in range(6)]
    pks = [e.pk for e in events]
    delivery.deliver_many(pks)
    OutboxEvent.objects.update(next_attempt_at=timezone.now())
    time.sleep(0.35)
    delivery.deliver_many(pks)  # the probe fails: open again, for twice as long
    assert len(outage_settings.requests) == 4
    # Only the first two failures were the rows' own; the one that opened it and the probe not.
    assert sum(r.attempts for r in OutboxEvent.objects.all()) == 2
    OutboxEvent.objects.update(next_attempt_at=timezone.now())
    time.sleep(0.65)
    delivery.deliver_many(pks)  # the probe succeeds; the rest follow at once
    assert set(OutboxEvent.objects.values_list("status", flat=True)) == {"sent"}
    assert len(outage_settings.requests) == 4 + 6


def test_a_long_outage_is_waited_out_in_steps_by_a_wake_up(outage_settings, settings, published):
    """The circuit's next probe a minute away: the rows are due again within MAX_COUNTDOWN and
    a drain is handed over for then (not left to the sweeper); no attempt is spent."""
    from django_supalytics import outage, tasks

    outage.PROBE_BASE = 60  # restored by outage_settings' monkeypatch
    settings.SUPALYTICS = {**settings.SUPALYTICS, "MAX_COUNTDOWN": 2}
    outage_settings.script(*[Answer(503, {"error": "down"})] * 3)
    events = [track(f"e{i}") for i in range(5)]
    published.clear()
    tasks.deliver_events([e.pk for e in events])
    assert len(outage_settings.requests) == 3
    # One wake-up for the held rows (the two that failed on their own back off apart).
    assert {h.event_ids for h in published} == {()}
    assert any(h.countdown is not None and 2 <= h.countdown <= 2.6 for h in published)
    waits = []
    for event in events[2:]:
        row = _reload(event)
        assert (row.status, row.attempts) == ("pending", 0)
        waits.append((row.next_attempt_at - timezone.now()).total_seconds())
    # Those the send had claimed are held for the next probe (in a step of MAX_COUNTDOWN);
    # any it had not reached when the circuit opened are due, for that wake-up to take.
    held = [wait for wait in waits if wait > 1]
    assert held and all(wait <= 2 for wait in waits)
    assert all(wait <= 0 for wait in waits if wait <= 1)


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


def test_a_short_pause_is_waited_out_in_place_a_long_one_hands_the_rows_back(endpoint, settings):
    """A 429 in a window's last milliseconds pauses everyone until the reset: a send waits
    that out and goes on, rather than handing its rows back to a later message."""
    from django_supalytics.ratelimit import get_limiter

    limiter = get_limiter(settings.SUPALYTICS["API_KEY"])
    slept: list[float] = []

    def sleep(seconds):
        slept.append(seconds)
        time.sleep(seconds)

    limiter.pause(0.3)
    short = track("short")
    assert delivery.deliver_many([short.pk], sleep=sleep)[0].outcome == "sent"
    assert len(slept) == 1 and 0.2 < slept[0] <= 0.3
    limiter.pause(3.0)
    long = track("long")
    result = delivery.deliver_many([long.pk], sleep=sleep)[0]
    assert result.outcome == "deferred" and 2 < (result.retry_in or 0) <= 3
    assert len(slept) == 1 and len(endpoint.requests) == 1


def test_purge_keeps_failed_rows_by_when_they_failed_not_when_created():
    long_ago = timezone.now() - timedelta(days=60)
    recent = track("failed_yesterday")
    OutboxEvent.objects.filter(pk=recent.pk).update(
        status="failed", created_at=long_ago, failed_at=timezone.now() - timedelta(days=1)
    )
    old = track("failed_long_ago")
    OutboxEvent.objects.filter(pk=old.pk).update(
        status="failed", created_at=long_ago, failed_at=long_ago
    )
    deleted = OutboxEvent.objects.purgeable(timedelta(days=7), timedelta(days=30)).purge()
    assert deleted == 1
    assert list(OutboxEvent.objects.values_list("name", flat=True)) == ["failed_yesterday"]


def test_purge_expired_applies_both_retentions(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "RETENTION_DAYS": 7, "FAILED_RETENTION_DAYS": 30}
    for name, status, days in [("s8", "sent", 8), ("s6", "sent", 6), ("f31", "failed", 31)]:
        event = track(name)
        when = timezone.now() - timedelta(days=days)
        OutboxEvent.objects.filter(pk=event.pk).update(status=status, sent_at=when, failed_at=when)
    failed_10 = track("f10")
    OutboxEvent.objects.filter(pk=failed_10.pk).update(
        status="failed", failed_at=timezone.now() - timedelta(days=10)
    )
    assert tasks.purge_expired() == 2
    assert set(OutboxEvent.objects.values_list("name", flat=True)) == {"s6", "f10"}
    settings.SUPALYTICS = {**settings.SUPALYTICS, "FAILED_RETENTION_DAYS": None}
    OutboxEvent.objects.filter(pk=failed_10.pk).update(
        failed_at=timezone.now() - timedelta(days=1000)
    )
    assert tasks.purge_expired() == 0  # None keeps failed rows for good


def test_purge_keeps_a_row_retried_after_it_was_selected():
    """The DELETE repeats the condition: a failed row retried meanwhile is not deleted."""
    from django_supalytics.queryset import OutboxEventQuerySet

    event = track("retried_meanwhile")
    long_ago = timezone.now() - timedelta(days=60)
    OutboxEvent.objects.filter(pk=event.pk).update(
        status="failed", failed_at=long_ago, created_at=long_ago
    )
    select = OutboxEventQuerySet.values_list

    def select_then_retry(self, *args, **kwargs):
        pks = list(select(self, *args, **kwargs))
        # An admin's "Retry now" commits between the purge's SELECT and its DELETE.
        OutboxEvent.objects.filter(pk=event.pk).update(status="pending", failed_at=None)
        return pks

    with mock.patch.object(OutboxEventQuerySet, "values_list", select_then_retry):
        deleted = OutboxEvent.objects.purgeable(timedelta(days=7), timedelta(days=7)).purge()
    assert deleted == 0
    assert _reload(event).status == "pending"


# One clock: the database's. Another process's clock (timezone.now) is off by an hour.


@pytest.fixture(params=[timedelta(hours=1), timedelta(hours=-1)], ids=["ahead", "behind"])
def skewed(request):
    """A context in which this process's clock (django.utils.timezone.now) is off by an hour
    from the database's: the web server or the worker of another machine."""
    real_now = timezone.now

    def skew():
        return mock.patch(
            "django.utils.timezone.now", side_effect=lambda: real_now() + request.param
        )

    return skew


def test_rows_tracked_on_a_skewed_web_server_are_due_at_once(skewed):
    with skewed():
        event = track("skewed")
    claimed = OutboxEvent.objects.claim(1, ids=[event.pk])
    assert [e.pk for e in claimed] == [event.pk]
    row = _reload(event)
    assert abs(row.next_attempt_at - timezone.now()) < timedelta(minutes=5)


def test_a_skewed_worker_claims_due_rows_and_leases_by_the_database_clock(skewed):
    event = track("e")
    with skewed():
        [claimed] = OutboxEvent.objects.claim(1, ids=[event.pk])
    row = _reload(event)
    assert row.lease_owner == claimed.lease_owner
    assert abs(row.lease_expires_at - (timezone.now() + timedelta(seconds=60))) < timedelta(
        minutes=5
    )


def test_a_skewed_worker_neither_steals_a_live_lease_nor_misses_an_expired_one(skewed):
    live = track("live")
    expired = track("expired")
    [held] = OutboxEvent.objects.claim(1, ids=[live.pk])
    OutboxEvent.objects.claim(1, ids=[expired.pk])
    # The database says this lease ran out a second ago.
    OutboxEvent.objects.filter(pk=expired.pk).update(
        lease_expires_at=db_now(-1), next_attempt_at=db_now(-120)
    )
    with skewed():
        assert OutboxEvent.objects.reclaim_expired() == 1
        assert [e.pk for e in OutboxEvent.objects.claim(10)] == [expired.pk]
    assert _reload(live).lease_owner == held.lease_owner


def test_a_wait_is_timed_by_the_database_clock(endpoint, skewed):
    endpoint.script(Answer(429, {"error": "rate_limited"}, {"Retry-After": "30"}))
    event = track("e")
    with skewed():
        assert delivery.deliver(event.pk).outcome == "rate_limited"
        [early] = delivery.deliver_many([event.pk])
    assert early.outcome == "deferred"
    assert early.retry_in is not None and 20 < early.retry_in <= 30
    row = _reload(event)
    assert abs(row.next_attempt_at - (timezone.now() + timedelta(seconds=30))) < timedelta(
        minutes=5
    )


def test_recorded_times_are_read_back_for_the_signals(endpoint):
    seen = []

    def receiver(sender, event, **kwargs):
        seen.append(event.sent_at)

    event_delivered.connect(receiver)
    try:
        assert delivery.deliver(track("e").pk).outcome == "sent"
    finally:
        event_delivered.disconnect(receiver)
    [sent_at] = seen
    assert isinstance(sent_at, datetime)
    assert abs(sent_at - timezone.now()) < timedelta(minutes=5)


# The outbox in more than one database


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_a_router_that_puts_the_outbox_in_another_database(endpoint, settings):
    settings.DATABASE_ROUTERS = [OutboxRouter("other")]
    with transaction.atomic(using="other"):
        event = track("routed")
    assert not OutboxEvent.objects.using("default").exists()
    # Claim, send and record, each in a transaction on "other" (no TransactionManagementError).
    assert delivery.deliver(event.pk).outcome == "sent"
    assert OutboxEvent.objects.using("other").get(pk=event.pk).status == "sent"


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_a_read_replica_router_does_not_hide_the_rows_just_claimed(endpoint, settings):
    # Reads go to "other", a replica that has not caught up (it has no rows at all).
    settings.DATABASE_ROUTERS = [OutboxRouter("default", read_alias="other")]
    event = track("e")
    assert delivery.deliver(event.pk).outcome == "sent"
    assert OutboxEvent.objects.using("default").get(pk=event.pk).status == "sent"


@pytest.mark.django_db(databases=["default", "other"])
def test_rows_tracked_in_another_database_are_published_and_claimed_there(
    endpoint, published, django_capture_on_commit_callbacks
):
    from django_supalytics import tasks

    with (
        django_capture_on_commit_callbacks(using="other", execute=True),
        transaction.atomic(using="other"),
    ):
        event = track("elsewhere", using="other")
    assert [(h.event_ids, h.using) for h in published] == [((event.pk,), "other")]
    assert tasks.deliver_events([event.pk], "other") == {"sent": 1}
    assert OutboxEvent.objects.using("other").get(pk=event.pk).status == "sent"
    assert [r.json["name"] for r in endpoint.requests] == ["elsewhere"]


# MariaDB / MySQL, for real


@pytest.fixture
def mariadb_not_in_utc():
    """A MariaDB session whose time zone is not UTC (Django leaves the server's as it is)."""
    from django.db import connections

    with connections["mariadb"].cursor() as cursor:
        cursor.execute("SET time_zone = '+05:00'")
    yield
    with connections["mariadb"].cursor() as cursor:
        cursor.execute("SET time_zone = @@global.time_zone")


@pytest.mark.mariadb
@pytest.mark.django_db(databases=["default", "mariadb"])
@pytest.mark.usefixtures("mariadb_not_in_utc")
def test_mariadb_claim_send_and_record(endpoint):
    with transaction.atomic(using="mariadb"):
        event = track("on_mariadb", visitor_id="v1", using="mariadb")
    [claimed] = OutboxEvent.objects.using("mariadb").claim(1, ids=[event.pk])
    row = OutboxEvent.objects.using("mariadb").get(pk=event.pk)
    assert (row.status, row.lease_owner) == ("sending", claimed.lease_owner)
    assert row.lease_expires_at is not None
    # The database's clock, in UTC like every stored time (not the session's time zone).
    assert abs(row.lease_expires_at - (timezone.now() + timedelta(seconds=60))) < timedelta(
        minutes=5
    )
    assert delivery.send([claimed])[0].outcome == "sent"
    row = OutboxEvent.objects.using("mariadb").get(pk=event.pk)
    assert (row.status, row.attempts, row.lease_owner) == ("sent", 1, None)
    assert row.sent_at is not None
    assert abs(row.sent_at - timezone.now()) < timedelta(minutes=5)
    [request] = endpoint.requests
    assert request.headers["Idempotency-Key"] == str(event.uuid)


@pytest.mark.mariadb
@pytest.mark.django_db(databases=["default", "mariadb"])
def test_mariadb_retry_waits_and_leases_expire_by_its_clock(endpoint):
    endpoint.script(Answer(429, {"error": "rate_limited"}, {"Retry-After": "30"}))
    event = track("e", using="mariadb")
    assert delivery.deliver(event.pk, using="mariadb").outcome == "rate_limited"
    [early] = delivery.deliver_many([event.pk], using="mariadb")
    assert early.outcome == "deferred" and 20 < (early.retry_in or 0) <= 30
    rows = OutboxEvent.objects.using("mariadb")
    rows.filter(pk=event.pk).update(
        status="sending", lease_expires_at=db_now(-1), next_attempt_at=db_now(-60)
    )
    assert OutboxEvent.objects.using("mariadb").reclaim_expired() == 1
    assert [e.pk for e in OutboxEvent.objects.using("mariadb").due()] == [event.pk]


@pytest.mark.mariadb
@pytest.mark.django_db(databases=["default", "mariadb"], transaction=True)
def test_mariadb_concurrent_claimers_skip_locked_rows():
    events = [track(f"e{i}", using="mariadb") for i in range(40)]
    claimed = claim_in_four_threads("mariadb")
    every = [pk for mine in claimed for pk in mine]
    assert sorted(every) == sorted(e.pk for e in events)  # each row exactly once
    assert sum(1 for mine in claimed if mine) >= 2


@pytest.mark.mariadb
@pytest.mark.django_db(databases=["default", "mariadb"])
def test_mariadb_purge_and_the_skip_locked_check(settings):
    from django_supalytics.checks import check_skip_locked

    settings.DATABASE_ROUTERS = [OutboxRouter("mariadb")]
    assert check_skip_locked(databases=["mariadb"]) == []
    old = track("old", using="mariadb")
    OutboxEvent.objects.using("mariadb").filter(pk=old.pk).update(
        status="sent", sent_at=db_now(-8 * 86400)
    )
    track("pending", using="mariadb")
    assert OutboxEvent.objects.using("mariadb").purgeable(timedelta(days=7)).purge() == 1
    assert list(OutboxEvent.objects.using("mariadb").values_list("name", flat=True)) == ["pending"]


# SQLite: no row locks; the claim's UPDATE re-checks the condition


@pytest.mark.django_db(databases=["default", "sqlite"], transaction=True)
def test_sqlite_worker_processes_never_claim_the_same_row():
    import json
    import subprocess
    import sys

    from tests.processes import ROOT, ChildProcess

    events = [track(f"e{i}", using="sqlite") for i in range(60)]
    env = ChildProcess([]).env()
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.claimer", "sqlite"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    claimed = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err.decode()
        claimed.append(json.loads(out))
    every = [pk for mine in claimed for pk in mine]
    assert sorted(every) == sorted(e.pk for e in events)  # each row exactly once
    rows = OutboxEvent.objects.using("sqlite")
    assert rows.filter(status="sending").count() == 60


@pytest.mark.django_db(databases=["default", "sqlite"])
def test_sqlite_now_has_the_precision_of_stored_times():
    """SQLite's clock has milliseconds, stored times microseconds: a row due at the end of the
    current millisecond is due now (it would not be if now were the millisecond's start)."""
    event = track("e", using="sqlite")
    rows = OutboxEvent.objects.using("sqlite")
    now = timezone.now()
    end_of_millisecond = now.replace(microsecond=now.microsecond // 1000 * 1000 + 999)
    rows.filter(pk=event.pk).update(next_attempt_at=end_of_millisecond)
    assert [e.pk for e in OutboxEvent.objects.using("sqlite").claim(1)] == [event.pk]


@pytest.mark.django_db(transaction=True)  # sent_at from the database clock, per commit
def test_a_draining_task_claims_more_rows_while_its_own_are_in_flight(endpoint, settings):
    """A task's rows all in flight: it claims the oldest other due rows (BATCH_SIZE at a time)
    and sends them meanwhile, instead of waiting for the slow answer first."""
    settings.SUPALYTICS = {**settings.SUPALYTICS, "BATCH_SIZE": 2, "SEND_CONCURRENCY": 4}
    endpoint.script(Answer(200, delay=1.0))
    others = [track(f"other{i}") for i in range(5)]
    slow = track("slow")
    results = delivery.deliver_many([slow.pk], drain=True)
    assert [(r.event_id, r.outcome) for r in results] == [(slow.pk, "sent")] + [
        (e.pk, "sent") for e in others
    ]
    assert len(endpoint.requests) == 6  # each row once
    # The first request to reach the server got the slow answer (usually the task's own row;
    # under load a drained one may overtake it): every other row was sent meanwhile.
    first = OutboxEvent.objects.get(uuid=endpoint.requests[0].headers["Idempotency-Key"])
    assert all(_reload(e).sent_at < first.sent_at for e in [slow, *others] if e.pk != first.pk)


def test_without_drain_or_past_its_time_only_the_tasks_rows_are_sent(endpoint, settings):
    others = [track(f"other{i}") for i in range(3)]
    mine = track("mine")
    assert [r.event_id for r in delivery.deliver_many([mine.pk])] == [mine.pk]
    mine = track("mine2")
    with mock.patch.object(delivery, "DRAIN_SECONDS", -1.0):
        assert [r.event_id for r in delivery.deliver_many([mine.pk], drain=True)] == [mine.pk]
    assert len(endpoint.requests) == 2
    assert {_reload(e).status for e in others} == {"pending"}


def test_a_drain_stops_when_sending_has_to_wait(endpoint, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "BATCH_SIZE": 2, "SEND_CONCURRENCY": 1}
    others = [track(f"other{i}") for i in range(8)]
    mine = track("mine")
    with (
        mock.patch(
            "django_supalytics.ratelimit.RedisRateLimiter.paused",
            side_effect=[0.0, 0.0, 5.0, 5.0, 5.0, 5.0],
        ),
        mock.patch(
            "django_supalytics.ratelimit.LocalRateLimiter.paused",
            side_effect=[0.0, 0.0, 5.0, 5.0, 5.0, 5.0],
        ),
        mock.patch(
            "django_supalytics.ratelimit.RedisRateLimiter.reserve",
            return_value=Reservation(True, 0.01),
        ),
        mock.patch(
            "django_supalytics.ratelimit.LocalRateLimiter.reserve",
            return_value=Reservation(True, 0.01),
        ),
    ):
        results = delivery.deliver_many([mine.pk], drain=True)
    outcomes = [(r.event_id, r.outcome) for r in results]
    # mine and the first refill's first row are sent; the pause hands back what was claimed
    # (with one thread, the next refill may already have been claimed) and stops the drain.
    assert outcomes[:2] == [(mine.pk, "sent"), (others[0].pk, "sent")]
    assert {outcome for _, outcome in outcomes[2:]} == {"deferred"}
    assert len(outcomes) <= 1 + 2 * 2 < 1 + len(others)
    assert len(endpoint.requests) == 2
    assert not OutboxEvent.objects.filter(status="sending").exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("drain", [False, True], ids=["own-rows", "draining"])
def test_a_batch_that_outlives_its_lease_is_never_posted_twice(endpoint, settings, drain):
    """An API answering in 0.75 s, a 3-s lease, 8 rows one at a time (6 s): meanwhile the
    sweeper and another worker keep trying. Each row is POSTed once, recorded as it is answered.
    Draining, the task's message names 2 rows and it claims the others 2 at a time (each claim
    a lease of its own, all renewed)."""
    from django.db import connection

    settings.SUPALYTICS = {
        **settings.SUPALYTICS,
        # Renewed every second: two seconds to spare for a renewal that waits for the CPU
        # (other tests on the cores) or for SQLite's lock (the rival's claims).
        "LEASE_SECONDS": 3,
        "SEND_CONCURRENCY": 1,
        "BATCH_SIZE": 2,
    }
    endpoint.script(*[Answer(200, delay=0.75) for _ in range(8)])
    events = [track(f"slow{i}") for i in range(8)]
    stop = threading.Event()
    stolen: list[str] = []

    def another_worker_and_the_sweeper():
        try:
            # From the moment the send has claimed its first rows (the message's): before,
            # this thread could take them first, a race the test is not about.
            first = [e.pk for e in events[:2]]
            pending = OutboxEvent.objects.filter(pk__in=first, status="pending")
            while not stop.is_set() and pending.exists():
                time.sleep(0.005)
            while not stop.is_set():
                OutboxEvent.objects.reclaim_expired()
                stolen.extend(r.outcome for r in delivery.deliver_due(10))
                time.sleep(0.1)
        finally:
            connection.close()

    rival = threading.Thread(target=another_worker_and_the_sweeper)
    rival.start()
    try:
        if drain:
            results = delivery.deliver_many([e.pk for e in events[:2]], drain=True)
        else:
            results = delivery.deliver_many([e.pk for e in events])
    finally:
        stop.set()
        rival.join()
    keys = [r.headers["Idempotency-Key"] for r in endpoint.requests]
    assert sorted(keys) == sorted(str(e.uuid) for e in events)  # none twice
    if drain:  # rows the drain had not claimed yet were fair game for the other worker
        # (its own two too, if the other worker claimed them first: those come back skipped)
        ours = [r.outcome for r in results if r.outcome != "skipped"]
        assert sorted(ours + stolen) == ["sent"] * 8
        assert len(results) >= 2
    else:
        assert [r.outcome for r in results] == ["sent"] * 8
        assert stolen == []
    assert set(OutboxEvent.objects.values_list("status", flat=True)) == {"sent"}


@pytest.mark.django_db(transaction=True)
def test_a_row_failing_alone_is_held_as_an_outage_after_three_failures(endpoint, settings):
    """Nothing else goes through: three failures in a row look like an outage, and the row
    spends no more attempts (in a long outage no row reaches MAX_ATTEMPTS)."""

    state.reset()
    endpoint.script(*[Answer(503, {"error": "down"})] * 3)
    event = track("e")
    outcomes = []
    for _ in range(3):
        OutboxEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())
        outcomes.append(delivery.deliver(event.pk).outcome)
    assert outcomes == ["retry", "retry", "deferred"]
    assert _reload(event).attempts == 2


def test_a_hanging_api_costs_attempts_and_backs_off(endpoint, settings, monkeypatch):
    """Requests that time out are outcomes too: recorded, attempts spent, backing off."""
    settings.SUPALYTICS = {
        **settings.SUPALYTICS,
        "REQUEST_TIMEOUT": 0.3,
        "SEND_CONCURRENCY": 2,
    }
    from django_supalytics import outage

    monkeypatch.setattr(outage, "THRESHOLD", 100)
    endpoint.script(*[Answer(200, delay=1.0) for _ in range(4)])
    events = [track(f"hang{i}") for i in range(4)]
    results = delivery.deliver_many([e.pk for e in events])
    assert [r.outcome for r in results] == ["retry"] * 4
    for event in events:
        row = _reload(event)
        assert (row.status, row.attempts, row.lease_owner) == ("pending", 1, None)
        assert row.last_error.startswith("timeout")


# A send finishes what it claims: every claimed row ends recorded or released.


@pytest.mark.django_db(transaction=True)
def test_an_error_in_a_drains_claim_leaves_no_row_sending_and_nothing_posted_twice(
    endpoint, settings
):
    """The drain's next claim raises (a bug, a database that stays down): the rows already in
    flight are recorded, those not started are handed back, and the error is raised."""
    settings.SUPALYTICS = {**settings.SUPALYTICS, "BATCH_SIZE": 2, "SEND_CONCURRENCY": 2}
    endpoint.script(*[Answer(200, delay=0.2) for _ in range(8)])
    events = [track(f"e{i}") for i in range(8)]
    from django_supalytics.queryset import OutboxEventQuerySet

    real_claim = OutboxEventQuerySet.claim
    claims = []

    def broken_second_claim(self, *args, **kwargs):
        claims.append(1)
        if len(claims) == 3:
            raise RuntimeError("a bug in the drain")
        return real_claim(self, *args, **kwargs)

    with (
        mock.patch.object(OutboxEventQuerySet, "claim", broken_second_claim),
        pytest.raises(RuntimeError),
    ):
        delivery.deliver_many([events[0].pk], drain=True)
    rows = {e.pk: _reload(e) for e in events}
    assert not [pk for pk, row in rows.items() if row.status == "sending"]
    posted = [r.headers["Idempotency-Key"] for r in endpoint.requests]
    assert len(posted) == len(set(posted))
    assert {str(row.uuid) for row in rows.values() if row.status == "sent"} == set(posted)
    # Later sends finish the rest, each once.
    delivery.deliver_due(100)
    assert {_reload(e).status for e in events} == {"sent"}
    assert len(endpoint.requests) == 8


@pytest.mark.django_db(transaction=True)
def test_no_request_starts_once_recording_is_impossible(endpoint, settings, monkeypatch):
    """The database is gone for longer than the retry layer waits: the send stops; rows not
    started are never POSTed (their leases run out; a later send takes them)."""
    from django.db import OperationalError

    from django_supalytics import queryset

    real_retrying = queryset.retrying
    monkeypatch.setattr(
        "django_supalytics.sender.retrying",
        lambda alias, work: real_retrying(alias, work, seconds=0.3),
    )
    settings.SUPALYTICS = {**settings.SUPALYTICS, "SEND_CONCURRENCY": 2}
    endpoint.script(*[Answer(200, delay=0.05) for _ in range(10)])
    events = [track(f"e{i}") for i in range(10)]

    def database_gone(row, outcome):
        raise OperationalError("the database system is shutting down")

    with (
        mock.patch.object(OutboxEvent, "record", database_gone),
        pytest.raises(OperationalError),
    ):
        delivery.deliver_many([e.pk for e in events])
    started = len(endpoint.requests)
    assert started == 2  # those in flight when the first record failed, and no more
    time.sleep(0.5)
    assert len(endpoint.requests) == started  # nothing goes on in the background


@pytest.mark.django_db(transaction=True)
def test_a_shutdown_stops_a_drain_and_hands_back_what_it_had_not_sent(endpoint, settings):
    from django_supalytics import shutdown

    settings.SUPALYTICS = {**settings.SUPALYTICS, "BATCH_SIZE": 2, "SEND_CONCURRENCY": 1}
    endpoint.script(*[Answer(200, delay=0.1) for _ in range(20)])
    events = [track(f"e{i}") for i in range(20)]
    timer = threading.Timer(0.35, shutdown.request)
    timer.start()
    started = time.monotonic()
    try:
        results = delivery.deliver_many([events[0].pk], drain=True)
    finally:
        timer.cancel()
        shutdown.reset()
    assert time.monotonic() - started < 2.0
    sent = [r for r in results if r.outcome == "sent"]
    assert 2 <= len(sent) < 10
    rows = [_reload(e) for e in events]
    assert not [r for r in rows if r.status == "sending"]
    back = [r for r in results if r.outcome == "deferred"]
    assert all(r.retry_in == 0.0 for r in back)  # due at once, for another worker
    assert len(endpoint.requests) == len(sent)


@pytest.mark.django_db(transaction=True)
def test_signals_are_sent_once_every_outcome_is_recorded(endpoint, settings):
    """A receiver runs after the send has recorded everything: a slow one cannot hold up the
    recording of other rows or the renewal of their leases."""
    settings.SUPALYTICS = {**settings.SUPALYTICS, "SEND_CONCURRENCY": 1}
    events = [track(f"e{i}") for i in range(4)]
    statuses_seen = []

    def receiver(sender, event, **kwargs):
        statuses_seen.append(sorted(_reload(e).status for e in events))

    event_delivered.connect(receiver)
    try:
        delivery.deliver_many([e.pk for e in events])
    finally:
        event_delivered.disconnect(receiver)
    assert statuses_seen == [["sent"] * 4] * 4


@pytest.mark.django_db(transaction=True)
def test_signals_follow_what_was_recorded_when_a_send_raises(endpoint, settings):
    """The first row is recorded sent, recording the second raises (a bug): the send raises,
    and ``event_delivered`` still goes out for the first row, which is sent."""
    settings.SUPALYTICS = {**settings.SUPALYTICS, "SEND_CONCURRENCY": 1}
    events = [track(f"e{i}") for i in range(2)]
    real_record = OutboxEvent.record
    seen = []

    def second_raises(row, outcome):
        if row.pk == events[1].pk:
            raise RuntimeError("a bug")
        return real_record(row, outcome)

    def receiver(sender, event, **kwargs):
        seen.append(event.pk)

    event_delivered.connect(receiver)
    try:
        with mock.patch.object(OutboxEvent, "record", second_raises), pytest.raises(RuntimeError):
            delivery.deliver_many([e.pk for e in events])
    finally:
        event_delivered.disconnect(receiver)
    assert seen == [events[0].pk]
    assert _reload(events[0]).status == "sent"


def test_drain_command_reclaims_an_expired_lease(endpoint):
    """A drain or worker killed mid-send left a row 'sending': the next drain sends it."""
    from django.core.management import call_command

    event = track("e")
    OutboxEvent.objects.claim(1, ids=[event.pk])
    OutboxEvent.objects.filter(pk=event.pk).update(lease_expires_at=db_now(-1))
    call_command("supalytics_drain", stdout=io.StringIO())
    assert _reload(event).status == "sent"
    assert len(endpoint.requests) == 1


def test_a_redirect_leaves_the_row_waiting_without_spending_an_attempt(endpoint):
    """A 301 is a misconfigured ENDPOINT: nothing is marked sent (no GET of the read API), the
    row waits with the Location named, and every sender pauses."""
    endpoint.script(Answer(301, {}, {"Location": "https://elsewhere.example/v1/events"}))
    event = track("e")
    result = delivery.deliver(event.pk)
    assert result.outcome == "deferred"
    row = _reload(event)
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 0, 301)
    assert "elsewhere.example" in row.last_error and "ENDPOINT" in row.last_error
    assert [r.method for r in endpoint.requests] == ["POST"]
    assert delivery.deliver_many([track("f").pk])[0].outcome == "deferred"  # paused
    assert len(endpoint.requests) == 1


def test_a_probe_goes_out_even_when_the_rest_of_its_send_is_held(outage_settings, settings):
    """Four threads: one is admitted as the probe, the others find the circuit open and stop
    the send. The probe is still sent (else no probe could go for its whole deadline)."""
    from django_supalytics import outage

    settings.SUPALYTICS = {**settings.SUPALYTICS, "SEND_CONCURRENCY": 4}
    circuit = outage.get_circuit(settings.SUPALYTICS["API_KEY"])
    for _ in range(3):
        circuit.report(ok=False, probe=False)
    time.sleep(0.35)  # past PROBE_BASE (0.3 s): the next admission is the probe
    # The probe's answer takes a while, so the other three ask while it is in flight (an
    # instant 200 could close the circuit before they ask, and they would be sent too).
    outage_settings.script(Answer(200, delay=0.5))
    events = [track(f"e{i}") for i in range(8)]
    results = delivery.deliver_many([e.pk for e in events])
    assert len(outage_settings.requests) == 1  # the probe, answered 200
    assert any(r.outcome == "sent" for r in results)
    assert circuit.admit() == outage.CLOSED


def test_an_error_page_echoing_the_headers_reaches_no_store_signal_log_or_terminal_raw(
    endpoint, settings, caplog
):
    """The page quotes the request's headers, the key hidden by a zero-width space in one copy,
    with line breaks, a terminal escape (clear the screen) and a right-to-left override."""
    from django.core.management import call_command

    page = (
        "<html><pre>POST /v1/events\r\nAuthorization: Bearer sly_test_key\r\n"
        "X-Echo: sly_test\u200b_key\r\n\x1b[2J\x1b]0;owned\x07\u202eriht\n</pre></html>"
    )
    endpoint.script(Answer(400, page.encode()))
    seen = []

    def record(sender, event, **kwargs):
        seen.append(kwargs["error"])

    event_failed.connect(record)
    try:
        assert delivery.deliver(track("e").pk).outcome == "failed"
    finally:
        event_failed.disconnect(record)
    row = OutboxEvent.objects.get()
    status = io.StringIO()
    call_command("supalytics_status", stdout=status)
    expected = (
        "<html><pre>POST /v1/events  Authorization: Bearer [API key]  X-Echo: [API key]  "
        "riht </pre></html>"
    )
    assert row.last_error == expected
    assert seen == [expected]
    assert expected in caplog.text
    for shown in (caplog.text, status.getvalue(), row.last_error):
        assert "sly_test" not in shown
        assert not any(ch in shown for ch in "\x1b\x07\u200b\u202e\r")


def test_the_key_is_hidden_in_the_frames_of_a_failed_attempt_in_an_error_mail(endpoint, caplog):
    """A bug under ``Attempts`` is logged with its traceback (an error mail, with
    ``mail_admins``): the key of every frame from the attempt down shows as stars."""
    from django.views.debug import ExceptionReporter

    key = "sly_" + "secret_in_frames"  # so: the page quotes the source around each frame

    def post_event(payload, idempotency_key, api_key):  # a frame with the key, under them
        raise RuntimeError("a bug")

    event = track("e")
    from django_supalytics import client

    with mock.patch.object(client, "post_event", post_event):
        result = attempt.Attempts(key, time.sleep).attempt(event)
    assert isinstance(result, attempt.Deferred)
    [record] = [r for r in caplog.records if r.exc_info]
    html = ExceptionReporter(None, *record.exc_info).get_traceback_html()
    assert "a bug" in html and "post_event" in html
    assert key not in html
    assert "********************" in html


def test_the_key_is_hidden_in_the_frame_that_makes_the_attempts(monkeypatch, caplog):
    """A limiter that cannot be made stops the attempts; the logged traceback (what an error
    mail shows) hides the key in every frame, and the stored reason never holds it."""
    import traceback

    from django.views.debug import SafeExceptionReporterFilter

    def broken(api_key):
        raise RuntimeError(f"store down for {api_key}")

    monkeypatch.setattr(attempt, "get_limiter", broken)
    with caplog.at_level("ERROR", logger="django_supalytics"):
        attempts = attempt.Attempts("sly_" + "secret_init", time.sleep)
    assert attempts.stopped is not None
    assert "rate limiter unavailable" in attempts.stopped.error
    assert "secret_init" not in attempts.stopped.error
    (record,) = [r for r in caplog.records if r.exc_info]
    reporter = SafeExceptionReporterFilter()
    frames = [
        dict(reporter.get_traceback_frame_variables(None, frame))
        for frame, _ in traceback.walk_tb(record.exc_info[2])
    ]
    init, raising = frames[-2], frames[-1]
    assert init["api_key"] == raising["api_key"] == "********************"
