"""The outbox's indexes serve the queries that run (PostgreSQL plans, on a table whose rows are
nearly all retained sent ones, as in production)."""

from datetime import timedelta

import pytest
from django.db import connection

from django_supalytics.models import OutboxEvent, db_now

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
TABLE = OutboxEvent._meta.db_table


@pytest.fixture
def large_outbox():
    """20,000 sent rows and a few live ones, analyzed."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (uuid, name, visitor_id, metadata, status, attempts, "
            "next_attempt_at, last_error, created_at, sent_at) "
            "SELECT gen_random_uuid(), 'e' || (i % 50), md5(i::text), '{}', 'sent', 1, "
            "now() - i * interval '1 minute', '', now() - i * interval '1 minute', "
            "now() - i * interval '1 minute' FROM generate_series(1, 20000) AS i"
        )
        cursor.execute(
            f"INSERT INTO {TABLE} (uuid, name, visitor_id, metadata, status, attempts, "
            "next_attempt_at, lease_expires_at, last_error, created_at, failed_at) "
            "SELECT gen_random_uuid(), 'live', '', '{}', s, 0, now(), "
            "CASE WHEN s = 'sending' THEN now() END, '', now(), "
            "CASE WHEN s = 'failed' THEN now() END "
            "FROM unnest(ARRAY['pending', 'pending', 'sending', 'failed', 'expired']) AS s"
        )
        cursor.execute(f"ANALYZE {TABLE}")


def plan(queryset):
    return queryset.explain()


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (
            lambda rows: rows.due().filter(priority=0).order_by("next_attempt_at", "pk")[:50],
            "supalytics_due_idx",
        ),
        (
            lambda rows: rows.due().filter(priority=1).order_by("next_attempt_at", "pk")[:50],
            "supalytics_due_idx",
        ),
        (
            lambda rows: rows.expired_leases().order_by("lease_expires_at", "pk")[:50],
            "supalytics_lease_idx",
        ),
        (lambda rows: rows.filter(status="pending").values("created_at"), "supalytics_due_idx"),
        (lambda rows: rows.filter(status="sending"), "supalytics_lease_idx"),
        (lambda rows: rows.filter(status="failed"), "supalytics_failed_idx"),
        (lambda rows: rows.filter(status="expired"), "supalytics_expired_idx"),
        (lambda rows: rows.purgeable(None, timedelta(days=30)), "supalytics_failed_idx"),
        (
            lambda rows: rows.filter(status="sent", sent_at__gte=db_now(-3600)),
            "supalytics_sent_idx",
        ),
        (lambda rows: rows.order_by("-created_at", "-id")[:100], "supalytics_created_idx"),
        (lambda rows: rows.filter(name="e7")[:100], "supalytics_name_idx"),
        (lambda rows: rows.filter(visitor_id="abc")[:100], "supalytics_visitor_idx"),
    ],
    ids=[
        "claim-live",
        "claim-bulk",
        "claim-expired-leases",
        "oldest-pending",
        "count-sending",
        "count-failed",
        "count-expired",
        "purge-failed",
        "delivered-last-hour",
        "admin-changelist",
        "admin-search-name",
        "admin-search-visitor",
    ],
)
def test_each_query_uses_its_index(large_outbox, query, index):
    text = plan(query(OutboxEvent.objects.all()))
    assert index in text, text
    assert "Seq Scan" not in text, text


def test_the_figures_of_the_admin_and_status_read_no_retained_rows(large_outbox, monkeypatch):
    from django.test.utils import CaptureQueriesContext

    from django_supalytics import stats

    monkeypatch.setattr(stats, "EXACT_COUNT_MAX", 10_000)  # large: the sent rows are estimated

    with CaptureQueriesContext(connection) as ctx:
        stats.summary()
        stats.hourly(24)
    selects = [q["sql"] for q in ctx.captured_queries if TABLE in q["sql"]]
    assert len(selects) >= 8
    with connection.cursor() as cursor:
        for sql in selects:
            cursor.execute(f"EXPLAIN {sql}")
            text = "\n".join(row[0] for row in cursor.fetchall())
            # Neither a scan of the table nor a walk of the created_at index from its oldest row.
            assert "Seq Scan" not in text, (sql, text)
            assert "supalytics_created_idx" not in text, (sql, text)


@pytest.mark.mariadb
@pytest.mark.django_db(databases=["default", "mariadb"], transaction=True)
def test_mariadb_builds_the_partial_indexes_as_plain_ones_and_estimates_rows(monkeypatch):
    from django.db import connections

    from django_supalytics import stats, track

    maria = connections["mariadb"]
    with maria.cursor() as cursor:
        cursor.execute(
            "SELECT index_name, GROUP_CONCAT(column_name ORDER BY seq_in_index) "
            "FROM information_schema.statistics WHERE table_schema = DATABASE() "
            "AND table_name = %s GROUP BY index_name",
            [TABLE],
        )
        indexes = dict(cursor.fetchall())
    assert indexes["supalytics_due_idx"] == "status,priority,next_attempt_at"
    assert indexes["supalytics_lease_idx"] == "status,lease_expires_at"
    assert indexes["supalytics_sent_idx"] == "sent_at"
    assert indexes["supalytics_failed_idx"] == "failed_at"
    # Django says so where it checks the models for that database.
    assert "models.W037" in {m.id for m in OutboxEvent.check(databases=["mariadb"])}

    for i in range(3):
        track(f"e{i}", using="mariadb")
    monkeypatch.setattr(stats, "EXACT_COUNT_MAX", 0)
    with maria.cursor() as cursor:
        cursor.execute(f"ANALYZE TABLE {TABLE}")
        cursor.fetchall()
    assert stats.estimated_rows("mariadb") == 3


def test_migrations_match_the_models():
    from django.core.management import call_command

    call_command(
        "makemigrations", "django_supalytics", "supalytics_receiver", check=True, dry_run=True
    )
