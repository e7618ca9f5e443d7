import pytest

from django_supalytics import forget_visitor, get_visitor_id, track
from django_supalytics.identity import link_visitor
from django_supalytics.models import OutboxEvent, VisitorIdentity

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_publish(published):
    return published


def test_get_visitor_id_of_a_user_without_one(django_user_model):
    assert get_visitor_id(django_user_model.objects.create(username="u")) is None
    assert get_visitor_id(None) is None


def test_link_returns_whether_it_wrote(django_user_model):
    user = django_user_model.objects.create(username="u")
    assert link_visitor(user, "v1") is True
    assert link_visitor(user, "v1") is False
    assert link_visitor(user, "v2") is False  # first touch
    assert get_visitor_id(user) == "v1"


def test_deleting_a_user_deletes_its_identity(django_user_model):
    user = django_user_model.objects.create(username="u")
    link_visitor(user, "v1")
    user.delete()
    assert not VisitorIdentity.objects.exists()


def test_forget_visitor_removes_identities_and_unsent_events(django_user_model):
    user = django_user_model.objects.create(username="u")
    link_visitor(user, "gone")
    pending = track("a", visitor_id="gone")
    sent = track("b", visitor_id="gone")
    OutboxEvent.objects.filter(pk=sent.pk).update(status="sent")
    other = track("c", visitor_id="kept")
    assert forget_visitor("gone") == {"identities": 1, "events": 1}
    assert not VisitorIdentity.objects.exists()
    assert OutboxEvent.objects.get(pk=pending.pk).visitor_id == ""
    assert OutboxEvent.objects.get(pk=other.pk).visitor_id == "kept"


def test_forget_visitor_with_a_user_field(django_user_model, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "USER_FIELD": "last_name"}
    django_user_model.objects.create(username="u", last_name="gone")
    assert forget_visitor("gone")["identities"] == 1
    assert not django_user_model.objects.filter(last_name="gone").exists()
