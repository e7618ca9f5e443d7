from unittest import mock

import pytest
from django.db import transaction

from django_supalytics import track
from django_supalytics.dispatch import publisher

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
    assert "sweeper will pick it up" in caplog.text


def test_inline_mode_publishes_on_the_committing_thread(settings, single):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENQUEUE": "inline"}
    with transaction.atomic():
        track("e")
        assert not single.called
    assert single.called
