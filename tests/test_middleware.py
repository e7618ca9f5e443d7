import logging

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection
from django.http import HttpResponse
from django.test import AsyncRequestFactory, RequestFactory
from django.test.utils import CaptureQueriesContext

from django_supalytics.middleware import VisitorIdMiddleware
from django_supalytics.models import VisitorIdentity

factory = RequestFactory()


def run(request, user=None):
    request.user = user or AnonymousUser()
    if not hasattr(request, "session"):
        request.session = SessionStore()
    seen = {}

    def view(req):
        seen["details"] = req.supalytics
        return HttpResponse("ok")

    VisitorIdMiddleware(view)(request)
    return seen["details"]


def test_cookie():
    request = factory.get("/", HTTP_COOKIE="supalytics_vid=abc123")
    details = run(request)
    assert (details.visitor_id, details.source) == ("abc123", "cookie")


def test_header():
    details = run(factory.get("/", HTTP_X_SUPALYTICS_VISITOR_ID="hdr-1"))
    assert (details.visitor_id, details.source) == ("hdr-1", "header")


def test_header_wins_over_cookie_by_default():
    request = factory.get("/", HTTP_X_SUPALYTICS_VISITOR_ID="hdr", HTTP_COOKIE="supalytics_vid=ck")
    assert run(request).visitor_id == "hdr"


def test_source_order_is_configurable(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "SOURCE_ORDER": ["cookie", "header"]}
    request = factory.get("/", HTTP_X_SUPALYTICS_VISITOR_ID="hdr", HTTP_COOKIE="supalytics_vid=ck")
    assert run(request).visitor_id == "ck"


def test_names_are_configurable(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "COOKIE_NAME": "vid", "HEADER_NAME": "X-Vid"}
    assert run(factory.get("/", HTTP_COOKIE="vid=c1")).visitor_id == "c1"
    assert run(factory.get("/", HTTP_X_VID="h1")).visitor_id == "h1"
    assert run(factory.get("/", HTTP_COOKIE="supalytics_vid=old")).visitor_id is None


def test_neither():
    details = run(factory.get("/"))
    assert (details.visitor_id, details.source) == (None, None)


@pytest.mark.parametrize("bad", ["x" * 129, "tab\there", "a b", "", "\x7f", "nul\x00"])
def test_invalid_header_is_ignored_and_not_logged(bad, caplog):
    caplog.set_level(logging.DEBUG, logger="django_supalytics")
    details = run(factory.get("/", HTTP_X_SUPALYTICS_VISITOR_ID=bad))
    assert details.visitor_id is None
    if bad:
        assert "ignored an invalid visitor ID from the header" in caplog.text
        assert bad not in caplog.text


def test_invalid_header_falls_back_to_a_valid_cookie():
    request = factory.get("/", HTTP_X_SUPALYTICS_VISITOR_ID="a b", HTTP_COOKIE="supalytics_vid=ok")
    assert (run(request).visitor_id, run(request).source) == ("ok", "cookie")


@pytest.mark.django_db
def test_anonymous_user_stores_nothing():
    run(factory.get("/", HTTP_COOKIE="supalytics_vid=abc"))
    assert not VisitorIdentity.objects.exists()


@pytest.mark.django_db
def test_invalid_id_is_never_stored(django_user_model):
    user = django_user_model.objects.create(username="u")
    run(factory.get("/", HTTP_X_SUPALYTICS_VISITOR_ID="x" * 200), user=user)
    assert not VisitorIdentity.objects.exists()


@pytest.mark.django_db
def test_authenticated_user_is_linked(django_user_model):
    user = django_user_model.objects.create(username="u")
    run(factory.get("/", HTTP_COOKIE="supalytics_vid=abc"), user=user)
    identity = VisitorIdentity.objects.get(user=user)
    assert identity.visitor_id == "abc"
    assert identity.first_seen is not None


@pytest.mark.django_db
def test_first_touch_keeps_the_first_id(django_user_model):
    user = django_user_model.objects.create(username="u")
    run(factory.get("/", HTTP_COOKIE="supalytics_vid=first"), user=user)
    run(factory.get("/", HTTP_COOKIE="supalytics_vid=second"), user=user)
    assert VisitorIdentity.objects.get(user=user).visitor_id == "first"


@pytest.mark.django_db
def test_last_touch_replaces_it(django_user_model, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ATTRIBUTION": "last"}
    user = django_user_model.objects.create(username="u")
    run(factory.get("/", HTTP_COOKIE="supalytics_vid=first"), user=user)
    run(factory.get("/", HTTP_COOKIE="supalytics_vid=second"), user=user)
    assert VisitorIdentity.objects.get(user=user).visitor_id == "second"


@pytest.mark.django_db
def test_custom_user_field(django_user_model, settings):
    # testproject's user has no spare field; last_name (150 chars) stands in for one.
    settings.SUPALYTICS = {**settings.SUPALYTICS, "USER_FIELD": "last_name"}
    user = django_user_model.objects.create(username="u")
    run(factory.get("/", HTTP_COOKIE="supalytics_vid=abc"), user=user)
    user.refresh_from_db()
    assert user.last_name == "abc"
    assert not VisitorIdentity.objects.exists()
    from django_supalytics import get_visitor_id

    assert get_visitor_id(user) == "abc"


@pytest.mark.django_db
def test_repeat_request_makes_no_query(django_user_model):
    user = django_user_model.objects.create(username="u")
    session = SessionStore()
    first = factory.get("/", HTTP_COOKIE="supalytics_vid=abc")
    first.session = session
    run(first, user=user)
    again = factory.get("/", HTTP_COOKIE="supalytics_vid=abc")
    again.session = session
    with CaptureQueriesContext(connection) as queries:
        run(again, user=user)
    assert len(queries) == 0


@pytest.mark.django_db
def test_repeat_request_without_a_session_writes_nothing(django_user_model):
    user = django_user_model.objects.create(username="u")
    run(factory.get("/", HTTP_COOKIE="supalytics_vid=abc"), user=user)
    request = factory.get("/", HTTP_COOKIE="supalytics_vid=abc")
    request.session = SessionStore()
    with CaptureQueriesContext(connection) as queries:
        run(request, user=user)
    assert all(q["sql"].lstrip().upper().startswith("SELECT") for q in queries.captured_queries)


@pytest.mark.django_db(transaction=True)
def test_async_middleware_under_an_asgi_request():
    user = get_user_model().objects.create(username="u")
    request = AsyncRequestFactory().get("/", headers={"X-Supalytics-Visitor-Id": "async-1"})
    request.user = user
    request.session = SessionStore()
    seen = {}

    async def view(req):
        seen["vid"] = req.supalytics.visitor_id
        return HttpResponse("ok")

    middleware = VisitorIdMiddleware(view)
    response = async_to_sync(middleware)(request)
    assert response.status_code == 200
    assert seen["vid"] == "async-1"
    assert VisitorIdentity.objects.get(user=user).visitor_id == "async-1"


@pytest.mark.django_db
def test_login_links_the_requests_visitor_id(client, django_user_model):
    django_user_model.objects.create_user(username="ada", password="pw-123456")
    client.cookies["supalytics_vid"] = "login-vid"
    client.post("/login/", {"username": "ada", "password": "pw-123456"})
    assert VisitorIdentity.objects.get(user__username="ada").visitor_id == "login-vid"


@pytest.mark.django_db
def test_signup_links_on_the_same_request(client):
    client.cookies["supalytics_vid"] = "signup-vid"
    response = client.post(
        "/signup/", {"username": "bob", "password1": "pw-123456x", "password2": "pw-123456x"}
    )
    assert response.status_code == 302
    assert VisitorIdentity.objects.get(user__username="bob").visitor_id == "signup-vid"


def test_request_track_shortcut(rf, settings):
    from unittest import mock

    request = rf.get("/", HTTP_X_SUPALYTICS_VISITOR_ID="v")
    details = run(request)
    with mock.patch("django_supalytics.tracking.track") as track:
        details.track("clicked", metadata={"a": 1})
    track.assert_called_once_with("clicked", request=request, metadata={"a": 1})


def _writes(queries):
    return [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]


@pytest.mark.django_db
def test_user_field_works_for_a_logged_in_user_through_the_middleware_stack(
    client, django_user_model, settings
):
    # request.user is a SimpleLazyObject there, not a User: type(user) has no manager.
    settings.SUPALYTICS = {**settings.SUPALYTICS, "USER_FIELD": "last_name"}
    user = django_user_model.objects.create(username="u")
    client.force_login(user)
    client.cookies["supalytics_vid"] = "abc123"
    assert client.get("/").status_code == 200
    user.refresh_from_db()
    assert user.last_name == "abc123"


@pytest.mark.django_db
def test_a_client_varying_its_visitor_id_writes_once_with_first_touch(client, django_user_model):
    user = django_user_model.objects.create(username="u")
    client.force_login(user)
    assert client.get("/", HTTP_X_SUPALYTICS_VISITOR_ID="v0").status_code == 200
    with CaptureQueriesContext(connection) as queries:
        for i in range(1, 6):
            assert client.get("/", HTTP_X_SUPALYTICS_VISITOR_ID=f"v{i}").status_code == 200
    assert _writes(queries) == []
    assert not any("supalytics_visitoridentity" in q["sql"] for q in queries.captured_queries)
    assert VisitorIdentity.objects.get(user=user).visitor_id == "v0"


@pytest.mark.django_db
def test_last_touch_replaces_at_most_once_a_minute_per_session(
    client, django_user_model, settings, monkeypatch
):
    from django_supalytics import identity

    settings.SUPALYTICS = {**settings.SUPALYTICS, "ATTRIBUTION": "last"}
    user = django_user_model.objects.create(username="u")
    client.force_login(user)
    client.get("/", HTTP_X_SUPALYTICS_VISITOR_ID="v0")
    with CaptureQueriesContext(connection) as queries:
        for i in range(1, 6):
            client.get("/", HTTP_X_SUPALYTICS_VISITOR_ID=f"v{i}")
    assert _writes(queries) == []
    assert VisitorIdentity.objects.get(user=user).visitor_id == "v0"
    monkeypatch.setattr(identity, "RELINK_INTERVAL", 0.0)
    client.get("/", HTTP_X_SUPALYTICS_VISITOR_ID="v6")
    assert VisitorIdentity.objects.get(user=user).visitor_id == "v6"


def test_repr_never_shows_the_visitor_id():
    details = run(factory.get("/", HTTP_COOKIE="supalytics_vid=secret-vid-123"))
    assert details.visitor_id == "secret-vid-123"
    assert "secret-vid-123" not in repr(details)
    assert "secret-vid-123" not in str(details)
    assert "source='cookie'" in repr(details)
