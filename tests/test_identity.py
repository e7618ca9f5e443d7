import pytest

from django_supalytics import InvalidEvent, forget_visitor, get_visitor_id, track
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


def test_forget_visitor_removes_identities_and_every_event_row(django_user_model):
    user = django_user_model.objects.create(username="u")
    link_visitor(user, "gone")
    pending = track("a", visitor_id="gone")
    sent = track("b", visitor_id="gone")
    OutboxEvent.objects.filter(pk=sent.pk).update(status="sent")
    other = track("c", visitor_id="kept")
    assert forget_visitor("gone") == {
        "identities": 1,
        "events": 2,
        "metadata": 0,
        "received": 0,
        "history": 0,
    }
    assert not VisitorIdentity.objects.exists()
    assert OutboxEvent.objects.get(pk=pending.pk).visitor_id == ""
    # A sent row kept for RETENTION_DAYS no longer holds it either.
    assert OutboxEvent.objects.get(pk=sent.pk).visitor_id == ""
    assert OutboxEvent.objects.get(pk=other.pk).visitor_id == "kept"


def test_forget_visitor_removes_metadata_entries_that_hold_the_id():
    vid = 'v"gone\\1'  # quotes and backslashes are escaped in the JSON text
    held = track(
        "checkout",
        metadata={"supalytics_visitor_id": vid, "ref": f"cart-{vid}", "plan": "pro", vid: 1},
    )
    OutboxEvent.objects.filter(pk=held.pk).update(status="sent")
    other = track("checkout", metadata={"supalytics_visitor_id": "v-kept", "plan": "pro"})
    assert forget_visitor(vid)["metadata"] == 1
    # Entries equal to the ID (as a value or a key) go; one that merely contains it stays.
    assert OutboxEvent.objects.get(pk=held.pk).metadata == {"ref": f"cart-{vid}", "plan": "pro"}
    assert OutboxEvent.objects.get(pk=other.pk).metadata == {
        "supalytics_visitor_id": "v-kept",
        "plan": "pro",
    }


def test_deleting_a_user_forgets_its_visitor_id_in_the_outbox(django_user_model):
    user = django_user_model.objects.create(username="u")
    link_visitor(user, "vid-of-u")
    mine = track("upgraded", user=user)  # the stored ID
    before_signup = track("viewed", visitor_id="vid-of-u", metadata={"vid": "vid-of-u"})
    other_id = track("clicked", user=user, visitor_id="vid-from-request")
    someone_else = track("viewed", visitor_id="vid-other")
    user.delete()
    rows = OutboxEvent.objects.in_bulk()
    assert rows[mine.pk].visitor_id == "" and rows[mine.pk].user_id is None
    assert rows[before_signup.pk].visitor_id == ""
    assert rows[before_signup.pk].metadata == {}
    assert rows[other_id.pk].visitor_id == ""
    assert rows[someone_else.pk].visitor_id == "vid-other"
    assert rows[mine.pk].status == "pending"  # still sent, without a visitor ID


def test_deleting_a_user_with_a_user_field_forgets_its_id(django_user_model, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "USER_FIELD": "last_name"}
    user = django_user_model.objects.create(username="u", last_name="vid-field")
    event = track("viewed", visitor_id="vid-field")
    user.delete()
    assert OutboxEvent.objects.get(pk=event.pk).visitor_id == ""


@pytest.mark.parametrize(
    "bad", ["has space <b>\x00" + "x" * 300, "has space", "", "x" * 129, "caf\u00e9", 42]
)
def test_link_visitor_refuses_an_invalid_id(django_user_model, bad):
    user = django_user_model.objects.create(username="u")
    with pytest.raises(InvalidEvent) as info:
        link_visitor(user, bad)
    assert info.value.field == "visitor_id"
    assert not VisitorIdentity.objects.exists()


def test_an_invalid_stored_id_is_never_sent(django_user_model, caplog):
    # Stored before validation existed, or by code that bypassed it.
    user = django_user_model.objects.create(username="u")
    VisitorIdentity.objects.create(user=user, visitor_id="has space <b>")
    assert get_visitor_id(user) is None
    assert track("upgraded", user=user).payload == {"name": "upgraded"}
    assert "has space" not in caplog.text
    # A valid ID replaces it, even with first-touch attribution.
    assert link_visitor(user, "v-valid") is True
    assert get_visitor_id(user) == "v-valid"


def test_an_invalid_id_in_the_user_field_is_never_sent(django_user_model, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "USER_FIELD": "last_name"}
    user = django_user_model.objects.create(username="u", last_name="Smith Jones")
    assert get_visitor_id(user) is None
    assert track("upgraded", user=user).payload == {"name": "upgraded"}


def test_forget_visitor_with_a_user_field(django_user_model, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "USER_FIELD": "last_name"}
    django_user_model.objects.create(username="u", last_name="gone")
    assert forget_visitor("gone")["identities"] == 1
    assert not django_user_model.objects.filter(last_name="gone").exists()


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_forget_visitor_covers_every_outbox_database(settings):
    """OUTBOX_DATABASES (track(using=...)) and an outbox routed to another database: each is
    forgotten in its own transaction (no TransactionManagementError)."""
    from django.db import transaction

    from tests.routers import OutboxRouter

    settings.SUPALYTICS = {**settings.SUPALYTICS, "OUTBOX_DATABASES": ["other"]}
    with transaction.atomic(using="other"):
        elsewhere = track("e", visitor_id="gone", metadata={"ref": "gone"}, using="other")
    here = track("e", visitor_id="gone")
    counts = forget_visitor("gone")
    assert (counts["identities"], counts["events"], counts["metadata"]) == (0, 2, 1)
    assert OutboxEvent.objects.using("other").get(pk=elsewhere.pk).visitor_id == ""
    assert OutboxEvent.objects.using("other").get(pk=elsewhere.pk).metadata == {}
    assert OutboxEvent.objects.get(pk=here.pk).visitor_id == ""
    settings.SUPALYTICS = {**settings.SUPALYTICS, "OUTBOX_DATABASES": []}
    settings.DATABASE_ROUTERS = [OutboxRouter("other")]
    routed = track("e", visitor_id="gone2", metadata={"ref": "gone2"})
    assert forget_visitor("gone2")["events"] == 1
    assert OutboxEvent.objects.using("other").get(pk=routed.pk).metadata == {}


def test_forget_visitor_leaves_other_visitors_metadata_that_merely_contains_the_id():
    """The security review's case: forget_visitor("a") wiped "plan" and "amount" of others."""
    others = [
        track("paid", visitor_id=f"v{i}", metadata={"plan": "basic", "amount": 29, "ref": "a-1"})
        for i in range(3)
    ]
    mine = track("paid", visitor_id="a", metadata={"plan": "pro", "copied_vid": "a"})
    assert forget_visitor("a")["metadata"] == 1
    for row in others:
        assert OutboxEvent.objects.get(pk=row.pk).metadata == {
            "plan": "basic",
            "amount": 29,
            "ref": "a-1",
        }
    assert OutboxEvent.objects.get(pk=mine.pk).metadata == {"plan": "pro"}


def test_forget_visitor_works_in_bounded_batches(monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_supalytics import forgetting

    monkeypatch.setattr(forgetting, "FORGET_BATCH_SIZE", 2)
    rows = [track("e", visitor_id="gone", metadata={"who": "gone", "n": i}) for i in range(5)]
    with CaptureQueriesContext(connection) as queries:
        counts = forget_visitor("gone")
    assert (counts["events"], counts["metadata"]) == (5, 5)
    assert {OutboxEvent.objects.get(pk=r.pk).visitor_id for r in rows} == {""}
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    blanking = [sql for sql in updates if "visitor_id" in sql.split("WHERE")[0]]
    assert len(blanking) == 3  # 2 + 2 + 1 rows: no statement holds the whole history


def test_forget_visitor_reaches_the_receivers_events_and_the_admin_history(django_user_model):
    from django.contrib.admin.models import CHANGE, LogEntry
    from django.contrib.contenttypes.models import ContentType

    from django_supalytics.receiver.models import ReceivedEvent

    user = django_user_model.objects.create(username="u")
    link_visitor(user, "gone")
    identity = VisitorIdentity.objects.get(user=user)
    kind = ContentType.objects.get_for_model(VisitorIdentity)
    for repr_ in (str(identity), "u → gone-not"):
        LogEntry.objects.create(
            user=user,
            content_type=kind,
            object_id=str(identity.pk),
            object_repr=repr_,
            action_flag=CHANGE,
        )
    stored = ReceivedEvent.objects.create(
        name="e",
        visitor_id="gone",
        metadata={"vid": "gone", "plan": "pro"},
        idempotency_key="k1",
        key_id="abc",
        key_prefix="sly_test",
    )
    counts = forget_visitor("gone")
    assert (counts["received"], counts["history"]) == (2, 1)
    stored.refresh_from_db()
    assert (stored.visitor_id, stored.metadata) == ("", {"plan": "pro"})
    reprs = set(LogEntry.objects.values_list("object_repr", flat=True))
    assert reprs == {"u → [forgotten]", "u → gone-not"}
