"""testproject as a user would test it, with the package's own testing helpers."""

import pytest
from django.db import transaction
from django.test import TestCase

from django_supalytics.testing import SupalyticsTestMixin, capture_events
from testproject.shop.models import Subscription
from testproject.shop.tasks import daily_report

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shopper(client, django_user_model):
    client.cookies["supalytics_vid"] = "shop-visitor"
    client.post(
        "/signup/", {"username": "ada", "password1": "pw-123456x", "password2": "pw-123456x"}
    )
    return client


def test_signup_is_tracked_with_the_visitor(supalytics_events, client):
    client.cookies["supalytics_vid"] = "new-visitor"
    client.post(
        "/signup/", {"username": "bo", "password1": "pw-123456x", "password2": "pw-123456x"}
    )
    supalytics_events.assert_tracked(
        "signed_up", count=1, visitor_id="new-visitor", user__username="bo"
    )


def test_subscribe_then_upgrade(supalytics_events, shopper):
    shopper.post("/plan/", {"plan": "pro"})
    shopper.post("/plan/", {"plan": "enterprise"})
    supalytics_events.assert_tracked(
        "subscription_created",
        metadata__plan="pro",
        metadata__amount=29.0,
        visitor_id="shop-visitor",
    )
    supalytics_events.assert_tracked(
        "subscription_upgraded", metadata__plan="enterprise", metadata__previous_plan="pro"
    )


def test_downgrade_and_cancel(supalytics_events, shopper):
    shopper.post("/plan/", {"plan": "enterprise"})
    shopper.post("/plan/", {"plan": "free"})
    shopper.post("/cancel/")
    supalytics_events.assert_tracked("subscription_downgraded", metadata__plan="free")
    supalytics_events.assert_tracked("subscription_cancelled")


def test_a_declined_payment_rolls_back_its_event(supalytics_events, shopper):
    shopper.post("/plan/", {"plan": "pro"})
    response = shopper.post("/plan/", {"plan": "enterprise", "fail": "1"})
    assert response.status_code == 402
    assert Subscription.objects.get().plan == "pro"
    supalytics_events.assert_not_tracked("subscription_upgraded")


def test_webhook_without_a_browser(supalytics_events, client):
    client.post(
        "/webhooks/payment/",
        {"amount": 99, "metadata": {"supalytics_visitor_id": "v9"}},
        content_type="application/json",
    )
    client.post("/webhooks/payment/", {"amount": 5}, content_type="application/json")
    supalytics_events.assert_tracked("payment_succeeded", visitor_id="v9", metadata__amount=99)
    supalytics_events.assert_tracked("payment_succeeded", visitor_id="")


@pytest.mark.parametrize("body", ["[]", '"x"', "3", "null", '{"metadata": "v9"}'])
def test_webhook_refuses_a_body_that_is_not_a_payment_object(supalytics_events, client, body):
    response = client.post("/webhooks/payment/", body, content_type="application/json")
    if body.startswith("{"):
        assert response.status_code == 200  # a metadata that is not an object: no visitor
        supalytics_events.assert_tracked("payment_succeeded", visitor_id="")
    else:
        assert response.status_code == 400
        supalytics_events.assert_not_tracked("payment_succeeded")


def test_periodic_task_tracks_without_a_visitor(supalytics_events, django_user_model):
    django_user_model.objects.create(username="a")
    daily_report()
    event = supalytics_events.assert_tracked("daily_report_sent", metadata__recipients=1)
    assert "visitor_id" not in event.payload


def test_assert_tracked_explains_a_miss(supalytics_events):
    from django_supalytics import track

    track("seen", metadata={"a": 1})
    with pytest.raises(AssertionError, match=r"expected 'other'.*Tracked: seen\{'a': 1\}"):
        supalytics_events.assert_tracked("other")
    with pytest.raises(AssertionError, match="expected 2 of 'seen'"):
        supalytics_events.assert_tracked("seen", count=2)


def test_capture_keeps_only_committed_events():
    from django_supalytics import track

    with capture_events() as events:
        with pytest.raises(RuntimeError), transaction.atomic():
            track("rolled_back")
            raise RuntimeError
        track("kept")
    assert [e.name for e in events] == ["kept"]


class MixinTests(SupalyticsTestMixin, TestCase):
    def test_mixin_in_a_test_case(self):
        with self.captureOnCommitCallbacks(execute=True):
            self.client.post("/webhooks/payment/", {"amount": 1}, content_type="application/json")
        self.assertTracked("payment_succeeded", metadata__amount=1)
        self.assertNotTracked("refunded")


def test_privacy_mode_signup_links_the_posted_visitor_id(client):
    from django_supalytics import get_visitor_id

    # No cookie, no header: the page copied window.supalytics.visitorId into the form.
    client.post(
        "/signup/",
        {
            "username": "pm",
            "password1": "pw-123456x",
            "password2": "pw-123456x",
            "supalytics_visitor_id": "pm-vid",
        },
    )
    from django.contrib.auth import get_user_model

    assert get_visitor_id(get_user_model().objects.get(username="pm")) == "pm-vid"


def test_privacy_mode_login_links_and_ignores_a_bad_id(client, django_user_model):
    from django_supalytics import get_visitor_id

    user = django_user_model.objects.create_user("lg", password="pw-123456x")
    client.post(
        "/login/",
        {"username": "lg", "password": "pw-123456x", "supalytics_visitor_id": "has space"},
    )
    assert get_visitor_id(django_user_model.objects.get(pk=user.pk)) is None
    client.post(
        "/login/", {"username": "lg", "password": "pw-123456x", "supalytics_visitor_id": "lg-vid"}
    )
    assert get_visitor_id(django_user_model.objects.get(pk=user.pk)) == "lg-vid"
