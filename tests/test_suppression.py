"""Suppression (docs/privacy.md#suppressing-a-visitor): a suppressed visitor's events carry no
visitor ID, or are dropped; only a keyed hash of the ID is kept; ``Sec-GPC: 1`` under
``HONOR_GPC``."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection
from django.http import HttpResponse
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from django_supalytics import (
    get_visitor_id,
    link_visitor,
    suppress_visitor,
    track,
    unsuppress_visitor,
)
from django_supalytics.forgetting import is_suppressed, visitor_digest
from django_supalytics.middleware import VisitorIdMiddleware
from django_supalytics.models import OutboxEvent, SuppressedVisitor

pytestmark = pytest.mark.django_db
factory = RequestFactory()
VID = "objector-7f3a9c"


@pytest.fixture(autouse=True)
def _no_publish(published, settings):
    # Suppression is opt-in: these tests are about what it does once turned on.
    settings.SUPALYTICS = {**settings.SUPALYTICS, "SUPPRESSION": "anonymize"}
    return published


def through_middleware(request, user=None):
    """Run ``request`` through the middleware; returns it (with ``request.supalytics``)."""
    request.user = user or AnonymousUser()
    request.session = SessionStore()
    VisitorIdMiddleware(lambda req: HttpResponse("ok"))(request)
    return request


def test_suppression_forgets_the_id_and_anonymizes_later_events(django_user_model):
    user = django_user_model.objects.create(username="ada")
    link_visitor(user, VID)
    before = track("signed_up", visitor_id=VID)
    counts = suppress_visitor(VID)
    assert counts["identities"] == 1 and counts["events"] == 1
    before.refresh_from_db()
    assert before.visitor_id == ""
    event = track("page_viewed", visitor_id=VID, metadata={"plan": "pro"})
    assert event is not None and event.visitor_id == "" and "visitor_id" not in event.payload
    assert event.payload == {"name": "page_viewed", "metadata": {"plan": "pro"}}


def test_a_suppressed_id_from_the_request_is_never_linked_to_the_user(django_user_model):
    user = django_user_model.objects.create(username="ada")
    suppress_visitor(VID)
    request = through_middleware(factory.get("/", HTTP_COOKIE=f"supalytics_vid={VID}"), user)
    event = track("page_viewed", request=request)
    assert event is not None and event.visitor_id == "" and event.user == user
    user.refresh_from_db()
    assert get_visitor_id(user) is None


def test_drop_writes_nothing_and_returns_none(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "SUPPRESSION": "drop"}
    suppress_visitor(VID)
    assert track("page_viewed", visitor_id=VID).pk is None  # unsaved
    assert not OutboxEvent.objects.exists()
    assert track("page_viewed", visitor_id="someone-else").pk is not None


def test_unsuppress_restores_tracking():
    suppress_visitor(VID)
    assert is_suppressed(VID)
    assert unsuppress_visitor(VID) is True
    assert unsuppress_visitor(VID) is False
    event = track("page_viewed", visitor_id=VID)
    assert event is not None and event.visitor_id == VID


def test_suppressing_twice_keeps_one_row():
    suppress_visitor(VID)
    suppress_visitor(VID)
    assert SuppressedVisitor.objects.count() == 1


def test_only_a_keyed_hash_is_stored_never_the_id(settings):
    suppress_visitor(VID)
    columns = [str(f.column) for f in SuppressedVisitor._meta.concrete_fields]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(columns)} FROM {SuppressedVisitor._meta.db_table}")
        rows = cursor.fetchall()
    assert len(rows) == 1
    assert not any(VID in str(value) for row in rows for value in row)
    digest = SuppressedVisitor.objects.get().digest
    assert len(digest) == 64 and digest == visitor_digest(VID)


def test_a_new_secret_key_matches_no_stored_hash(settings):
    suppress_visitor(VID)
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    assert visitor_digest(VID) != SuppressedVisitor.objects.get().digest
    event = track("page_viewed", visitor_id=VID)
    assert event is not None and event.visitor_id == VID


def test_one_indexed_lookup_with_a_visitor_id_none_without():
    with CaptureQueriesContext(connection) as queries:
        track("page_viewed", visitor_id=VID)
    lookups = [
        q["sql"] for q in queries.captured_queries if SuppressedVisitor._meta.db_table in q["sql"]
    ]
    assert len(lookups) == 1
    with CaptureQueriesContext(connection) as without:
        track("page_viewed")
    assert not any(SuppressedVisitor._meta.db_table in q["sql"] for q in without.captured_queries)
    assert len(without.captured_queries) == len(queries.captured_queries) - 1


def gpc_request():
    return factory.get("/", HTTP_COOKIE=f"supalytics_vid={VID}", HTTP_SEC_GPC="1")


def test_gpc_is_ignored_unless_the_setting_asks(django_user_model):
    user = django_user_model.objects.create(username="ada")
    request = through_middleware(gpc_request(), user)
    assert request.supalytics.visitor_id == VID
    assert get_visitor_id(user) == VID
    event = track("page_viewed", request=request)
    assert event is not None and event.visitor_id == VID


def test_gpc_honoured_when_the_setting_asks(django_user_model, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "HONOR_GPC": True}
    user = django_user_model.objects.create(username="ada")
    request = through_middleware(gpc_request(), user)
    assert request.supalytics.visitor_id is None and request.supalytics.gpc
    assert get_visitor_id(user) is None
    event = request.supalytics.track("page_viewed")
    assert event is not None and event.visitor_id == ""
    # Even the ID stored for the user earlier is left out.
    link_visitor(user, "stored-before")
    assert track("page_viewed", request=request).visitor_id == ""
    # Only "1" objects.
    plain = through_middleware(
        factory.get("/", HTTP_COOKIE=f"supalytics_vid={VID}", HTTP_SEC_GPC="0")
    )
    assert plain.supalytics.visitor_id == VID


def test_gpc_with_drop_tracks_nothing(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "HONOR_GPC": True, "SUPPRESSION": "drop"}
    request = through_middleware(gpc_request())
    assert track("page_viewed", request=request).pk is None
    assert not OutboxEvent.objects.exists()


def test_the_repr_says_gpc_without_the_id(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "HONOR_GPC": True}
    request = through_middleware(gpc_request())
    assert "gpc" in repr(request.supalytics) and VID not in repr(request.supalytics)


def test_off_by_default_track_looks_nothing_up_and_suppressing_is_refused(settings):
    """The default costs track() no query (a round trip as dear as its INSERT), and a
    suppression that would not be honoured is an error, not a silent no-op."""
    from django.core.exceptions import ImproperlyConfigured

    from django_supalytics import suppress_visitor

    settings.SUPALYTICS = {k: v for k, v in settings.SUPALYTICS.items() if k != "SUPPRESSION"}
    with CaptureQueriesContext(connection) as queries:
        track("page_viewed", visitor_id=VID)
    assert not any(SuppressedVisitor._meta.db_table in q["sql"] for q in queries.captured_queries)
    with pytest.raises(ImproperlyConfigured, match="SUPPRESSION"):
        suppress_visitor(VID)
    assert not SuppressedVisitor.objects.exists()


def test_gpc_needs_no_suppression_setting(django_user_model, settings):
    """Sec-GPC: 1 under HONOR_GPC costs no query, so it is honoured with SUPPRESSION "off"."""
    settings.SUPALYTICS = {
        **{k: v for k, v in settings.SUPALYTICS.items() if k != "SUPPRESSION"},
        "HONOR_GPC": True,
    }
    request = through_middleware(gpc_request())
    assert request.supalytics.visitor_id is None
    event = track("page_viewed", request=request, visitor_id=VID)
    assert event.pk is not None and event.visitor_id == ""
