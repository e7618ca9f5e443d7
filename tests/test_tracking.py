from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import RequestFactory

from django_supalytics import InvalidEvent, track
from django_supalytics.middleware import SupalyticsDetails
from django_supalytics.models import OutboxEvent, VisitorIdentity

pytestmark = pytest.mark.django_db


def test_track_writes_one_pending_row_and_returns_it(published):
    event = track("subscription_created", visitor_id="abc123", metadata={"plan": "pro"})
    row = OutboxEvent.objects.get()
    assert row == event
    assert (row.name, row.visitor_id, row.metadata, row.status) == (
        "subscription_created",
        "abc123",
        {"plan": "pro"},
        "pending",
    )
    assert row.payload == {
        "name": "subscription_created",
        "visitor_id": "abc123",
        "metadata": {"plan": "pro"},
    }


def test_track_enqueues_only_on_commit(published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        event = track("upgraded")
        assert not published.called
    assert len(callbacks) == 1
    callbacks[0]()
    published.assert_called_once()
    assert published.call_args.args[0] == (event.pk,)


@pytest.mark.django_db(transaction=True)
def test_rolled_back_track_leaves_no_row_and_no_delivery(published):
    with pytest.raises(RuntimeError), transaction.atomic():
        track("upgraded")
        raise RuntimeError("the view failed")
    assert not OutboxEvent.objects.exists()
    assert not published.called


@pytest.mark.django_db(transaction=True)
def test_committed_track_is_enqueued(published):
    with transaction.atomic():
        event = track("upgraded")
    published.assert_called_once()
    assert published.call_args.args[0] == (event.pk,)


@pytest.mark.django_db(transaction=True)
def test_broker_down_does_not_break_the_caller(published, caplog):
    published.side_effect = ConnectionRefusedError("broker down")
    with transaction.atomic():
        event = track("upgraded")
    assert OutboxEvent.objects.get(pk=event.pk).status == "pending"
    assert "could not enqueue" in caplog.text


def test_invalid_event_writes_nothing(published):
    with pytest.raises(InvalidEvent) as info:
        track("Bad Name")
    assert info.value.field == "name"
    with pytest.raises(InvalidEvent, match="metadata"):
        track("ok", metadata={"a": None})
    with pytest.raises(InvalidEvent, match="visitor_id"):
        track("ok", visitor_id="has space")
    assert not OutboxEvent.objects.exists()


def test_oversized_body_is_refused(published):
    metadata = {f"k{i}": "\U0001f600" * 255 for i in range(10)}  # 12 bytes each in JSON
    with pytest.raises(InvalidEvent, match="16384"):
        track("big", metadata=metadata)


def test_track_writes_to_the_given_database_alias(published):
    event = track("upgraded", using="default")
    assert event._state.db == "default"


def _request(visitor_id=None, user=None):
    factory = RequestFactory()
    request = (
        factory.get("/", HTTP_X_SUPALYTICS_VISITOR_ID=visitor_id)
        if visitor_id
        else (factory.get("/"))
    )
    request.user = user or mock.Mock(is_authenticated=False, pk=None)
    request.supalytics = SupalyticsDetails(request)  # type: ignore[attr-defined]
    return request


def test_explicit_visitor_id_wins(published, django_user_model):
    user = django_user_model.objects.create(username="u")
    VisitorIdentity.objects.create(user=user, visitor_id="stored")
    event = track("e", visitor_id="explicit", user=user, request=_request("from-request"))
    assert event.visitor_id == "explicit"


def test_request_visitor_id_beats_the_stored_one(published, django_user_model):
    user = django_user_model.objects.create(username="u")
    VisitorIdentity.objects.create(user=user, visitor_id="stored")
    assert track("e", user=user, request=_request("from-request")).visitor_id == "from-request"


def test_stored_visitor_id_is_used_for_a_user(published, django_user_model):
    user = django_user_model.objects.create(username="u")
    VisitorIdentity.objects.create(user=user, visitor_id="stored")
    event = track("e", user=user)
    assert (event.visitor_id, event.user) == ("stored", user)


def test_no_visitor_id_is_omitted_from_the_payload(published):
    event = track("daily_report_sent", metadata={"recipients": 150})
    assert event.payload == {"name": "daily_report_sent", "metadata": {"recipients": 150}}


def test_track_with_request_links_a_user_who_has_no_id(published):
    user = get_user_model().objects.create(username="u")
    track("e", request=_request("vid-1", user=user))
    assert VisitorIdentity.objects.get(user=user).visitor_id == "vid-1"


def test_track_never_touches_the_network(published):
    with mock.patch("requests.Session.send", side_effect=AssertionError("network")):
        track("e")


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_track_warns_when_the_open_transaction_is_on_another_database(published):
    from django_supalytics.tracking import OutboxNotInTransactionWarning

    with (
        pytest.warns(OutboxNotInTransactionWarning, match="open on 'other'"),
        transaction.atomic(using="other"),
    ):
        track("not_atomic_with_other")
    # Inside a transaction on the outbox's database too: no warning (warnings are errors here).
    with transaction.atomic(using="other"), transaction.atomic():
        track("atomic")
    assert OutboxEvent.objects.count() == 2
