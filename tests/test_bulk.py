"""Retry and discard at scale (``django_supalytics.bulk``): batches, re-checked conditions,
hand-overs, and the admin history."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_supalytics import bulk
from django_supalytics.models import OutboxEvent

pytestmark = pytest.mark.django_db


def rows(count, status="failed", **fields):
    defaults = {"attempts": 16, "last_status_code": 503, "failed_at": timezone.now()}
    if status != "failed":
        defaults = {}
    made = OutboxEvent.objects.bulk_create(
        OutboxEvent(name=f"e{i}", status=status, **{**defaults, **fields}) for i in range(count)
    )
    return [row.pk for row in made]


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-123456")


def test_retry_makes_failed_and_pending_rows_due_and_hands_them_over(
    published, django_capture_on_commit_callbacks
):
    failed, pending = rows(4), rows(2, status="pending")
    sent, held = rows(1, status="sent"), rows(1, status="sending")
    with django_capture_on_commit_callbacks(execute=True):
        assert bulk.retry(OutboxEvent.objects.all(), batch_size=3) == 6
    changed = OutboxEvent.objects.filter(pk__in=failed + pending)
    assert set(changed.values_list("status", "attempts", "failed_at")) == {("pending", 0, None)}
    assert OutboxEvent.objects.get(pk=sent[0]).status == "sent"
    assert OutboxEvent.objects.get(pk=held[0]).status == "sending"
    handed = sorted(pk for hand_over in published for pk in hand_over.event_ids)
    assert handed == sorted(failed + pending)


def test_retry_reads_one_batch_of_keys_at_a_time(published):
    rows(10)
    with CaptureQueriesContext(connection) as queries:
        assert bulk.retry(OutboxEvent.objects.filter(status="failed"), batch_size=3) == 10
    limits = [q["sql"] for q in queries.captured_queries if "LIMIT 3" in q["sql"]]
    # No pending rows (one query says so); four batches of at most 3 failed rows, and the
    # empty one that ends them.
    assert len(limits) == 6


def test_history_names_the_first_hundred_rows_and_sums_up_the_rest(published, admin_user):
    rows(130)
    assert bulk.retry(OutboxEvent.objects.all(), user=admin_user, batch_size=50) == 130
    entries = LogEntry.objects.filter(action_flag=CHANGE)
    assert entries.exclude(object_id=None).count() == 100
    summary = entries.get(object_id=None)
    assert summary.object_repr == "30 more outbox events" and "Retried" in summary.change_message


def test_discard_deletes_what_no_worker_holds(admin_user):
    failed, held = rows(3), rows(2, status="sending")
    assert bulk.discard(OutboxEvent.objects.all(), user=admin_user, batch_size=2) == 3
    assert set(OutboxEvent.objects.values_list("pk", flat=True)) == set(held)
    logged = LogEntry.objects.filter(action_flag=DELETION)
    assert sorted(int(pk or 0) for pk in logged.values_list("object_id", flat=True)) == failed


@pytest.mark.django_db(transaction=True)
def test_retry_failed_since_runs_in_the_background_on_matching_rows(published, admin_user):
    now = timezone.now()
    old = rows(2, failed_at=now - timedelta(hours=3))
    recent_503 = rows(3, failed_at=now - timedelta(minutes=5))
    recent_401 = rows(2, failed_at=now - timedelta(minutes=5), last_status_code=401)
    assert bulk.failed_since(now - timedelta(hours=1)).count() == 5
    thread = bulk.retry_failed_since(now - timedelta(hours=1), status_code=503, user=admin_user)
    thread.join(timeout=10)
    assert not thread.is_alive()
    status = dict(OutboxEvent.objects.values_list("pk", "status"))
    assert {status[pk] for pk in recent_503} == {"pending"}
    assert {status[pk] for pk in old + recent_401} == {"failed"}
    assert LogEntry.objects.filter(action_flag=CHANGE).count() == 3


@pytest.mark.parametrize(
    ("code", "setting", "helps"),
    [
        (401, "API_KEY", False),
        (403, "API_KEY", False),
        (404, "ENDPOINT", False),
        (301, "ENDPOINT", False),
        (400, "", True),
        (503, "", True),
        (None, "", True),
    ],
)
def test_which_setting_a_failure_names(code, setting, helps):
    assert bulk.setting_to_fix(code) == setting
    row = OutboxEvent(status="failed", last_status_code=code)
    assert bulk.retry_helps(row) is helps
    assert bulk.retry_helps(OutboxEvent(status="sent", last_status_code=code)) is None
