import math
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
        assert not published
    assert len(callbacks) == 1
    callbacks[0]()
    assert [h.event_ids for h in published] == [(event.pk,)]


@pytest.mark.django_db(transaction=True)
def test_rolled_back_track_leaves_no_row_and_no_delivery(published):
    with pytest.raises(RuntimeError), transaction.atomic():
        track("upgraded")
        raise RuntimeError("the view failed")
    assert not OutboxEvent.objects.exists()
    assert not published


@pytest.mark.django_db(transaction=True)
def test_committed_track_is_enqueued(published):
    with transaction.atomic():
        event = track("upgraded")
    assert [h.event_ids for h in published] == [(event.pk,)]


@pytest.mark.django_db(transaction=True)
def test_broker_down_does_not_break_the_caller(broker, caplog, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENQUEUE": "inline"}  # on this thread
    broker.refusals = math.inf
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


def test_a_decimal_price_is_stored_and_sent_with_its_exact_digits(endpoint, published):
    from decimal import Decimal

    from django_supalytics import delivery

    event = track("paid", metadata={"price": Decimal("29.90"), "fee": Decimal("0.0000001")})
    row = OutboxEvent.objects.get(pk=event.pk)  # as the database gives it back
    assert [row.metadata["price"].text, row.metadata["fee"].text] == ["29.90", "0.0000001"]
    assert delivery.deliver(event.pk).outcome == "sent"
    [request] = endpoint.requests
    # As JSON numbers with every digit (jsonb orders the keys its own way).
    assert b'"price":29.90' in request.body and b'"fee":0.0000001' in request.body
    assert request.json == {"name": "paid", "metadata": {"price": 29.9, "fee": 1e-7}}


def test_a_float_the_database_would_give_back_over_the_limit_is_refused_at_track(published):
    # PostgreSQL's jsonb gives 1e300 back as a 301-digit integer, which the API refuses.
    with pytest.raises(InvalidEvent, match="'amount' is 301 characters") as info:
        track("paid", metadata={"amount": 1e300})
    assert info.value.field == "metadata"
    assert not OutboxEvent.objects.exists()


def test_a_small_float_comes_back_from_the_database_as_the_same_number(endpoint, published):
    from django_supalytics import delivery

    event = track("paid", metadata={"rate": 1e-7, "share": 0.1})
    row = OutboxEvent.objects.get(pk=event.pk)
    assert row.metadata == {"rate": 1e-7, "share": 0.1}
    assert delivery.deliver(event.pk).outcome == "sent"
    [request] = endpoint.requests
    assert request.json == {"name": "paid", "metadata": {"rate": 1e-7, "share": 0.1}}
