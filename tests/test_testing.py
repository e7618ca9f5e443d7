"""The testing helpers in tests that never commit: the way users write them."""

import pytest
from django.db import transaction
from django.test import TestCase

from django_supalytics import track
from django_supalytics.testing import SupalyticsTestMixin, capture_events


@pytest.mark.django_db
def test_events_are_seen_in_a_test_that_never_commits():
    with capture_events() as events:
        track("kept", metadata={"plan": "pro"})
    events.assert_tracked("kept", count=1, metadata__plan="pro")
    assert [e.name for e in events] == ["kept"]
    assert len(events) == 1 and events[0].name == "kept"


@pytest.mark.django_db
def test_a_rolled_back_savepoint_drops_its_events():
    with capture_events() as events:
        track("before")
        with pytest.raises(RuntimeError), transaction.atomic():
            track("rolled_back")
            raise RuntimeError
        track("after")
    assert [e.name for e in events] == ["before", "after"]
    events.assert_not_tracked("rolled_back")


def test_the_fixture_asks_for_the_database_itself(supalytics_events):
    track("no_marker_needed")
    supalytics_events.assert_tracked("no_marker_needed")


@pytest.mark.django_db
def test_nothing_is_handed_to_celery_while_capturing(published, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENQUEUE": "inline"}
    with capture_events(), transaction.atomic():
        track("captured")
    assert not published.called


class MixinInATestCase(SupalyticsTestMixin, TestCase):
    def test_without_capturing_on_commit_callbacks(self):
        self.client.post("/webhooks/payment/", {"amount": 1}, content_type="application/json")
        self.assertTracked("payment_succeeded", metadata__amount=1)
        self.assertNotTracked("refunded")
