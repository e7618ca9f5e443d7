import time
from unittest import mock

import pytest
from django.db import transaction

from django_supalytics import track
from django_supalytics.client import Kind
from django_supalytics.delivery import Result
from django_supalytics.dispatch import publisher, requeue
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def background(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENQUEUE": "background"}


@pytest.fixture
def single():
    with mock.patch("django_supalytics.tasks.deliver_event.apply_async") as apply_async:
        yield apply_async


@pytest.fixture
def many():
    with mock.patch("django_supalytics.tasks.deliver_events.apply_async") as apply_async:
        yield apply_async


def test_one_message_per_transaction(background, single, many):
    with transaction.atomic():
        events = [track(f"e{i}") for i in range(3)]
    assert publisher.flush()
    assert not single.called
    many.assert_called_once()
    assert many.call_args.args[0] == ([e.pk for e in events],)


def test_large_transactions_are_split_into_batches(background, single, many, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "BATCH_SIZE": 40}
    with transaction.atomic():
        events = [track(f"e{i}") for i in range(100)]
    assert publisher.flush()
    sent = [pk for call in many.call_args_list for pk in call.args[0][0]]
    assert sent == [e.pk for e in events]
    assert [len(call.args[0][0]) for call in many.call_args_list] == [40, 40, 20]


def test_a_single_event_uses_deliver_event(background, single, many):
    with transaction.atomic():
        event = track("alone")
    assert publisher.flush()
    single.assert_called_once()
    assert single.call_args.args[0] == (event.pk,)


def test_autocommit_publishes_each_event(background, single, many):
    event = track("autocommit")
    assert publisher.flush()
    assert single.call_args.args[0] == (event.pk,)


def test_nothing_is_published_before_commit(background, single, many):
    with transaction.atomic():
        track("e")
        assert publisher.flush()
        assert not single.called and not many.called
    assert publisher.flush()
    assert single.called


def test_rolled_back_savepoint_starts_a_new_batch(background, single, many):
    with transaction.atomic():
        try:
            with transaction.atomic():
                track("rolled_back")
                raise RuntimeError
        except RuntimeError:
            pass
        kept = track("kept")
    assert publisher.flush()
    assert single.call_args.args[0] == (kept.pk,)
    assert not many.called


def test_broker_down_in_the_background_loses_nothing(background, single, caplog):
    single.side_effect = ConnectionError("broker down")
    with transaction.atomic():
        event = track("e")
    assert publisher.flush()
    event.refresh_from_db()
    assert event.status == "pending"
    assert "could not enqueue" in caplog.text


def test_a_publish_that_failed_is_tried_again_within_seconds(background, single):
    """The broker is back after two tries: the third goes out, 1 + 2 s later."""
    single.side_effect = [ConnectionError("down"), ConnectionError("down"), None]
    with transaction.atomic():
        event = track("e")
    assert publisher.flush()
    wait_for(lambda: single.call_count == 3, timeout=10)
    assert [call.args[0] for call in single.call_args_list] == [(event.pk,)] * 3


def test_a_requeue_that_failed_keeps_its_due_time(many):
    """A task handed rows back for 5 s and the broker refused: the retry a second later
    counts down what is left of the 5 s."""
    many.side_effect = [ConnectionError("down"), None]
    requeue([Result(1, Kind.DEFERRED, 5.0), Result(2, Kind.DEFERRED, 5.0)])
    wait_for(lambda: many.call_count == 2, timeout=10)
    call = many.call_args_list[1]
    assert call.args[0] == ([1, 2],)
    assert 3.5 < call.kwargs["countdown"] < 4.5


def test_after_sweep_grace_the_sweeper_has_them(background, single, settings, caplog):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "SWEEP_GRACE": 1.5}
    single.side_effect = ConnectionError("down")
    track("e")
    wait_for(lambda: "the sweeper will pick them up" in caplog.text, timeout=10)
    tries = single.call_count
    time.sleep(2.5)
    assert single.call_count == tries == 3  # at 0, 1 and 2 s; then no more


def test_inline_mode_publishes_on_the_committing_thread(settings, single):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENQUEUE": "inline"}
    with transaction.atomic():
        track("e")
        assert not single.called
    assert single.called
