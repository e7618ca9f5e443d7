import math
import time

import pytest
from django.db import transaction

from django_supalytics import state, track
from django_supalytics.backends import locmem
from django_supalytics.client import Kind
from django_supalytics.delivery import Result
from django_supalytics.dispatch import publisher, requeue
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def ids(tries):
    return [list(t.event_ids) for t in tries]


def test_one_message_per_transaction(broker):
    with transaction.atomic():
        events = [track(f"e{i}") for i in range(3)]
    assert publisher.flush()
    assert ids(broker.tries) == [[e.pk for e in events]]


def test_large_transactions_are_split_into_batches(broker, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "BATCH_SIZE": 40}
    with transaction.atomic():
        events = [track(f"e{i}") for i in range(100)]
    assert publisher.flush()
    assert [pk for chunk in ids(broker.tries) for pk in chunk] == [e.pk for e in events]
    assert [len(chunk) for chunk in ids(broker.tries)] == [40, 40, 20]


def test_autocommit_publishes_each_event(broker):
    event = track("autocommit")
    assert publisher.flush()
    assert ids(broker.tries) == [[event.pk]]


def test_nothing_is_published_before_commit(broker):
    with transaction.atomic():
        event = track("e")
        assert publisher.flush()
        assert not broker.tries
    assert publisher.flush()
    assert ids(broker.tries) == [[event.pk]]


def test_rolled_back_savepoint_starts_a_new_batch(broker):
    with transaction.atomic():
        try:
            with transaction.atomic():
                track("rolled_back")
                raise RuntimeError
        except RuntimeError:
            pass
        kept = track("kept")
    assert publisher.flush()
    assert ids(broker.tries) == [[kept.pk]]


def test_broker_down_in_the_background_loses_nothing(broker, caplog):
    broker.refusals = math.inf
    with transaction.atomic():
        event = track("e")
    assert publisher.flush()
    event.refresh_from_db()
    assert event.status == "pending"
    assert "could not enqueue" in caplog.text


def test_a_publish_that_failed_is_tried_again_within_seconds(broker):
    """The broker is back after two tries: the third goes out, 1 + 2 s later."""
    broker.refusals = 2
    with transaction.atomic():
        event = track("e")
    assert publisher.flush()
    wait_for(lambda: len(broker.tries) == 3, timeout=10)
    assert ids(broker.tries) == [[event.pk]] * 3
    assert [list(h.event_ids) for h in locmem.outbox] == [[event.pk]]


def test_a_requeue_that_failed_keeps_its_due_time(broker):
    """A task handed rows back for 5 s and the broker refused: the retry a second later
    counts down what is left of the 5 s."""
    broker.refusals = 1
    requeue([Result(1, Kind.DEFERRED, 5.0), Result(2, Kind.DEFERRED, 5.0)])
    wait_for(lambda: len(broker.tries) == 2, timeout=10)
    retry = broker.tries[1]
    assert list(retry.event_ids) == []  # a wake-up: the drain it starts claims rows 1 and 2
    assert retry.countdown is not None and 3.5 < retry.countdown < 5.0


def test_after_sweep_grace_the_sweeper_has_them(broker, settings, caplog):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "SWEEP_GRACE": 1.5}
    broker.refusals = math.inf
    track("e")
    wait_for(lambda: "the sweeper will pick them up" in caplog.text, timeout=10)
    tries = len(broker.tries)
    time.sleep(2.5)
    assert len(broker.tries) == tries == 3  # at 0, 1 and 2 s; then no more


def test_inline_mode_publishes_on_the_committing_thread(broker, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENQUEUE": "inline"}
    with transaction.atomic():
        event = track("e")
        assert not broker.tries
    assert ids(broker.tries) == [[event.pk]]  # no flush: already done


def test_a_backend_that_does_not_publish_in_the_background_hands_over_on_commit(
    published, settings
):
    """locmem (like Django's Tasks and cron) has no broker round trip to keep off the
    committing thread: the hand-over is done by the time the commit returns."""
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENQUEUE": "background"}
    with transaction.atomic():
        event = track("e")
    assert [list(h.event_ids) for h in published] == [[event.pk]]


def test_a_countdown_the_backend_cannot_honour_hands_nothing_over(published, settings):
    """Without supports_defer the rows wait for their next delivery, the sweeper or the
    drain: handing them over now would only have them tried too early."""
    from django_supalytics.dispatch import publish

    settings.SUPALYTICS = {**settings.SUPALYTICS, "DELIVERY_BACKEND": "tests.backends.NoDefer"}
    assert publish([1, 2], countdown=3.0)
    assert not published
    assert publish([3])
    assert [(list(h.event_ids), h.countdown) for h in published] == [([3], None)]


# Wake-ups: what an outage or a pause held back comes back as one drain, not one per task.


def test_a_wake_up_is_handed_over_once_for_every_task_that_asks(published):
    from django_supalytics.dispatch import WAKE_BUCKET, wake

    # Three moments inside one half second (a little after its start), then another one.
    start = math.ceil((time.time() + 2.0) / WAKE_BUCKET) * WAKE_BUCKET + 0.05
    countdown = start - time.time()
    assert wake(countdown) is True
    assert [wake(countdown), wake(countdown + 0.2)] == [False, False]  # already on its way
    [handover] = published
    assert handover.event_ids == () and countdown <= (handover.countdown or 0) <= countdown + 0.6
    assert wake(countdown + 1.0) is True  # another half second
    assert len(published) == 2


def test_requeue_wakes_each_half_second_of_due_times_once(published):
    results = [Result(pk, Kind.DEFERRED, 1.8) for pk in range(40)]
    results += [Result(99, Kind.RETRY, 6.2), Result(100, Kind.RETRY, 120.0), Result(101, Kind.SENT)]
    from django_supalytics.dispatch import WAKE_BUCKET

    # Just after a half second starts, so that both calls fall in the same ones.
    time.sleep(WAKE_BUCKET - time.time() % WAKE_BUCKET + 0.01)
    requeue(results)
    requeue(results)  # another task held back by the same pause
    countdowns = sorted(h.countdown or 0 for h in published)
    assert len(countdowns) == 2  # 120 s is the sweeper's; a sent row needs nothing
    assert 1.8 <= countdowns[0] <= 2.6 and 6.2 <= countdowns[1] <= 7.1
    assert {h.event_ids for h in published} == {()}


@pytest.mark.django_db(transaction=True)
def test_a_long_outage_brings_back_one_message_per_probe_not_one_per_task(
    published, settings, monkeypatch, server
):
    """50 tasks each find the API failing: their rows come back with one drain between them."""
    from django_supalytics import outage, tasks
    from tests.httpserver import Answer

    settings.SUPALYTICS = {
        **settings.SUPALYTICS,
        "ENDPOINT": server.url,
        "RATE_LIMIT": 10_000,
        "OUTAGE_PROBE_MAX": 30,
        # One request at a time: with more, the requests started before the first 503 came
        # back are sent too (up to SEND_CONCURRENCY), and this test is about tasks, not threads.
        "SEND_CONCURRENCY": 1,
    }
    monkeypatch.setattr(outage, "THRESHOLD", 1)
    monkeypatch.setattr(outage, "PROBE_BASE", 30)
    state.reset()
    server.script(*[Answer(503, {"error": "down"})] * 5)
    events = [track(f"e{i}") for i in range(50)]
    published.clear()
    for event in events:
        tasks.deliver_events([event.pk])
    assert len(server.requests) == 1  # the failure that opened the circuit
    assert len(published) <= 2
    assert {h.event_ids for h in published} == {()}
