"""health/ and metrics/ (django_supalytics.urls), the prometheus_client collector, and the lanes'
due counts and ETAs in supalytics_status and the admin."""

import json
import math
import subprocess
import sys
from io import StringIO
from unittest import mock

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from django_supalytics import delivery, health, track
from django_supalytics.models import OutboxEvent, db_now
from tests.httpserver import Answer
from tests.processes import ROOT

pytestmark = pytest.mark.django_db
HEALTH, METRICS = "/supalytics/health/", "/supalytics/metrics/"
NAMES = {
    "supalytics_outbox_events",
    "supalytics_due_events",
    "supalytics_oldest_due_seconds",
    "supalytics_backlog_eta_seconds",
    "supalytics_stuck_sending_events",
    "supalytics_oldest_stuck_seconds",
    "supalytics_rate_limit_paused_seconds",
    "supalytics_outage_open",
    "supalytics_delivered_last_hour",
    "supalytics_failed_last_hour",
    "supalytics_rate_limit",
    "supalytics_health_max_lag_seconds",
}


@pytest.fixture(autouse=True)
def _published(published):
    return published


def overdue(event, seconds, **fields):
    """The row due ``seconds`` ago by the database's clock."""
    OutboxEvent.objects.filter(pk=event.pk).update(next_attempt_at=db_now(-seconds), **fields)


def stuck(event, seconds):
    """The row ``sending`` under a lease that ran out ``seconds`` ago."""
    OutboxEvent.objects.filter(pk=event.pk).update(
        status="sending", lease_expires_at=db_now(-seconds)
    )


def get_health(client):
    response = client.get(HEALTH)
    assert response["Cache-Control"] == "no-store"
    assert response["Content-Type"] == "application/json"
    return response.status_code, response.json()


def samples(text):
    """``{(name, labels as a sorted tuple): value}`` of a text exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# health/


def test_health_is_200_with_nothing_due(client):
    assert reverse("supalytics:health") == HEALTH
    code, body = get_health(client)
    assert code == 200
    assert body["status"] == "ok" and body["lag_seconds"] == 0 and body["behind"] == 0
    assert body["max_lag_seconds"] == 300.0  # HEALTH_MAX_LAG's default
    assert body["lanes"]["live"] == {"due": 0, "oldest_due_seconds": 0.0, "eta_seconds": 0.0}


def test_health_is_200_while_rows_are_delivered(client, endpoint):
    events = [track(f"e{i}") for i in range(3)]
    overdue(events[0], 20)  # due a little while: a worker is on its way
    code, body = get_health(client)
    assert code == 200
    assert body["lanes"]["live"]["due"] == 3 and 20 <= body["lag_seconds"] < 30
    call_command("supalytics_drain", stdout=StringIO())
    assert set(OutboxEvent.objects.values_list("status", flat=True)) == {"sent"}
    assert get_health(client) == (200, mock.ANY)
    assert get_health(client)[1]["behind"] == 0


def test_health_is_503_with_live_rows_overdue_beyond_the_max_lag(client):
    track("late")
    track("on_time")
    overdue(OutboxEvent.objects.get(name="late"), 400)
    code, body = get_health(client)
    assert code == 503
    assert body["status"] == "behind" and 400 <= body["lag_seconds"] < 410
    assert body["behind"] == 2 and body["lanes"]["live"]["due"] == 2


def test_health_follows_the_max_lag_setting(client, settings):
    overdue(track("a"), 5)
    assert get_health(client)[0] == 200
    settings.SUPALYTICS = {**settings.SUPALYTICS, "HEALTH_MAX_LAG": 1}
    code, body = get_health(client)
    assert code == 503 and body["max_lag_seconds"] == 1.0


def test_an_overdue_bulk_lane_alone_is_reported_but_stays_200(client):
    for i in range(3):
        overdue(track(f"backfilled{i}", bulk=True), 1200)
    code, body = get_health(client)
    assert code == 200 and body["lag_seconds"] == 0 and body["behind"] == 0
    bulk = body["lanes"]["bulk"]
    assert bulk["due"] == 3 and bulk["oldest_due_seconds"] >= 1200
    overdue(track("live"), 400)  # a live row behind the backfill fails health
    assert get_health(client)[0] == 503


def test_an_expired_lease_older_than_the_max_lag_is_503(client):
    event = track("held")
    stuck(event, 30)  # the sweeper takes it back within its interval
    code, body = get_health(client)
    assert code == 200 and body["stuck_sending"] == 1 and 30 <= body["oldest_stuck_seconds"] < 40
    stuck(event, 400)  # no sweeper: beat is not running
    code, body = get_health(client)
    assert code == 503 and body["behind"] == 1 and body["lag_seconds"] >= 400


def test_a_lease_still_held_is_not_stuck(client):
    OutboxEvent.objects.filter(pk=track("sending").pk).update(
        status="sending", lease_expires_at=db_now(60)
    )
    assert get_health(client)[1]["stuck_sending"] == 0


def test_health_shows_no_event_data(client):
    event = track("secret_name", visitor_id="vis-secret", metadata={"plan": "secret_plan"})
    overdue(event, 400)
    response = client.get(HEALTH)
    text = response.content.decode()
    assert "secret" not in text and str(event.uuid) not in text
    assert set(response.json()) == {
        "status",
        "lag_seconds",
        "behind",
        "max_lag_seconds",
        "stuck_sending",
        "oldest_stuck_seconds",
        "lanes",
    }
    assert set(response.json()["lanes"]["live"]) == {"due", "oldest_due_seconds", "eta_seconds"}


def test_a_503_is_not_logged_as_a_server_error(client, caplog):
    """A probe every few seconds while delivery is behind must not flood the error logs."""
    overdue(track("late"), 400)
    with caplog.at_level("WARNING", logger="django.request"):
        assert client.get(HEALTH).status_code == 503
    assert not [r for r in caplog.records if r.name == "django.request"]


def test_health_without_a_database_is_503(client):
    with mock.patch.object(health, "health", side_effect=OperationalError("down")):
        code, body = get_health(client)
    assert (code, body) == (503, {"status": "unavailable"})


def test_health_stays_200_during_an_api_outage_while_metrics_show_it(
    client, admin_client, endpoint, settings, monkeypatch
):
    """Rows the circuit defers are not due: health measures our delivery keeping up."""
    from django_supalytics import outage

    settings.SUPALYTICS = {
        **settings.SUPALYTICS,
        "OUTAGE_PROBE_MAX": 600,
        "MAX_COUNTDOWN": 600,
        "SEND_CONCURRENCY": 1,
    }
    monkeypatch.setattr(outage, "PROBE_BASE", 600.0)
    endpoint.script(*[Answer(503, {"error": "down"})] * 10)
    events = [track(f"e{i}") for i in range(6)]
    delivery.deliver_many([e.pk for e in events])
    assert len(endpoint.requests) == outage.THRESHOLD
    OutboxEvent.objects.filter(attempts__gt=0).update(next_attempt_at=db_now(60))  # backoff
    assert get_health(client) == (200, mock.ANY)
    figures = samples(admin_client.get(METRICS).content.decode())
    assert figures[("supalytics_outage_open", ())] == 1
    assert figures[("supalytics_due_events", (("lane", "live"),))] == 0
    assert figures[("supalytics_outbox_events", (("status", "pending"),))] == 6


@pytest.mark.django_db(transaction=True)
def test_the_documented_probe_command_fails_on_a_503(live_server):
    """docs/operations.md's Kubernetes liveness probe, run as printed against this site."""
    text = (ROOT / "docs" / "operations.md").read_text()
    line = next(x for x in text.splitlines() if x.strip().startswith('command: ["python"'))
    command = json.loads(line.split("command:", 1)[1])
    command[0], command[-1] = sys.executable, live_server.url + HEALTH
    assert subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    overdue(track("late"), 400)
    failed = subprocess.run(command, capture_output=True, timeout=30)
    assert failed.returncode == 1 and b"503" in failed.stderr


# metrics/


def test_metrics_refuses_anonymous_and_non_staff(client, django_user_model):
    assert reverse("supalytics:metrics") == METRICS
    response = client.get(METRICS)
    assert response.status_code == 403 and "WWW-Authenticate" not in response
    # Without METRICS_TOKEN a bearer token opens nothing.
    assert client.get(METRICS, headers={"Authorization": "Bearer "}).status_code == 403
    user = django_user_model.objects.create_user("user", password="pw")
    client.force_login(user)
    assert client.get(METRICS).status_code == 403


def test_metrics_answers_staff(client, django_user_model):
    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    response = client.get(METRICS)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response["Cache-Control"] == "no-store"


def test_metrics_bearer_token(client, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "METRICS_TOKEN": "scrape-me"}
    response = client.get(METRICS)
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    for wrong in ("Bearer scrape-m", "Bearer scrape-me-too", "Basic scrape-me", "scrape-me"):
        assert client.get(METRICS, headers={"Authorization": wrong}).status_code == 401
    response = client.get(METRICS, headers={"Authorization": "Bearer scrape-me"})
    assert response.status_code == 200 and "supalytics_outbox_events" in response.content.decode()


def test_metrics_names_and_values(admin_client, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "RATE_LIMIT": 2}
    for i in range(5):
        overdue(track(f"live{i}"), 10 + i)
    for i in range(3):
        overdue(track(f"bulk{i}", bulk=True), 100)
    stuck(track("held"), 5)
    OutboxEvent.objects.filter(pk=track("done").pk).update(status="sent", sent_at=db_now())
    OutboxEvent.objects.filter(pk=track("gone").pk).update(status="expired")
    text = admin_client.get(METRICS).content.decode()
    for name in NAMES:
        assert f"# HELP {name} " in text and f"# TYPE {name} gauge" in text
    assert 'supalytics_outbox_events{status="pending"} 8\n' in text
    figures = samples(text)
    counts = {s: figures[("supalytics_outbox_events", (("status", s),))] for s in ("sending",)}
    assert counts == {"sending": 1}
    for status, n in {"sent": 1, "failed": 0, "expired": 1}.items():
        assert figures[("supalytics_outbox_events", (("status", status),))] == n
    lane = {name: (("lane", name),) for name in ("live", "bulk")}
    assert figures[("supalytics_due_events", lane["live"])] == 5
    assert figures[("supalytics_due_events", lane["bulk"])] == 3
    assert 14 <= figures[("supalytics_oldest_due_seconds", lane["live"])] < 20
    assert 100 <= figures[("supalytics_oldest_due_seconds", lane["bulk"])] < 110
    # At 2/s: the live lane's 5 rows take 2.5 s; bulk waits for them, then its own 3.
    assert figures[("supalytics_backlog_eta_seconds", lane["live"])] == 2.5
    assert figures[("supalytics_backlog_eta_seconds", lane["bulk"])] == 4.0
    assert figures[("supalytics_stuck_sending_events", ())] == 1
    assert figures[("supalytics_delivered_last_hour", ())] == 1
    assert figures[("supalytics_failed_last_hour", ())] == 0
    assert figures[("supalytics_rate_limit", ())] == 2
    assert figures[("supalytics_rate_limit_paused_seconds", ())] == 0
    assert figures[("supalytics_outage_open", ())] == 0


def test_metrics_estimate_the_sent_rows_of_a_large_outbox(admin_client):
    track("a")
    with mock.patch("django_supalytics.health.estimated_rows", return_value=2_000_000):
        figures = samples(admin_client.get(METRICS).content.decode())
    assert figures[("supalytics_outbox_events", (("status", "sent"),))] == 1_999_999


def test_metrics_text_is_valid_exposition_format(admin_client):
    track("a")
    text = admin_client.get(METRICS).content.decode()
    families = list(text_string_to_metric_families(text))
    assert {f.name for f in families} == NAMES
    assert {f.type for f in families} == {"gauge"}
    assert all(f.documentation for f in families)


def test_a_429_shows_as_a_pause(admin_client, endpoint):
    endpoint.script(Answer(429, {"error": "rate_limited"}, {"Retry-After": "30"}))
    delivery.deliver(track("e").pk)
    figures = samples(admin_client.get(METRICS).content.decode())
    assert 25 < figures[("supalytics_rate_limit_paused_seconds", ())] <= 30


def test_metrics_survive_a_cache_that_does_not_answer(admin_client):
    with mock.patch("django_supalytics.ratelimit.get_limiter", side_effect=ConnectionError):
        figures = samples(admin_client.get(METRICS).content.decode())
    assert math.isnan(figures[("supalytics_outage_open", ())])
    assert math.isnan(figures[("supalytics_rate_limit_paused_seconds", ())])
    assert figures[("supalytics_outbox_events", (("status", "pending"),))] == 0


def test_exposition_escapes_help_and_labels():
    text = health.exposition([("m", 'a \\ b\nc "q"', [({"k": 'x"\\\ny'}, float("inf"))])])
    assert text == '# HELP m a \\\\ b\\nc "q"\n# TYPE m gauge\nm{k="x\\"\\\\\\ny"} +Inf\n'
    [family] = text_string_to_metric_families(text)
    assert family.documentation == 'a \\ b\nc "q"'
    assert family.samples[0].labels == {"k": 'x"\\\ny'}


# prometheus_client


def test_the_collector_is_in_the_default_registry_once():
    from prometheus_client import REGISTRY, generate_latest

    from django_supalytics import prometheus

    assert prometheus.register() is prometheus.register()  # ready() registered it already
    track("a")
    families = {f.name: f for f in REGISTRY.collect() if f.name.startswith("supalytics_")}
    assert set(families) == NAMES
    pending = [s for s in families["supalytics_outbox_events"].samples if s.labels]
    assert {s.labels["status"]: s.value for s in pending}["pending"] == 1
    assert b'supalytics_outbox_events{status="pending"} 1.0' in generate_latest(REGISTRY)


def test_the_collector_yields_nothing_when_the_database_is_down():
    from django_supalytics import prometheus

    with mock.patch.object(prometheus, "metrics", side_effect=OperationalError("down")):
        assert list(prometheus.SupalyticsCollector().collect()) == []
    assert list(prometheus.SupalyticsCollector().describe()) == []


# supalytics_status and the admin


def test_status_shows_each_lane_due_and_its_eta(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "RATE_LIMIT": 4}
    for i in range(4):
        track(f"live{i}")
    for i in range(8):
        track(f"bulk{i}", bulk=True)
    out = StringIO()
    call_command("supalytics_status", stdout=out)
    assert "due live            4 (oldest 0s, ETA 1s)" in out.getvalue()
    assert "due bulk            8 (oldest 0s, ETA 3s)" in out.getvalue()
    out = StringIO()
    call_command("supalytics_status", "--json", stdout=out)
    lanes = json.loads(out.getvalue())["lanes"]
    assert (lanes["live"]["due"], lanes["live"]["eta_seconds"]) == (4, 1.0)
    assert (lanes["bulk"]["due"], lanes["bulk"]["eta_seconds"]) == (8, 3.0)


def test_admin_summary_shows_each_lane_due_and_its_eta(admin_client, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "RATE_LIMIT": 1}
    for i in range(90):
        track(f"live{i}")
    track("bulk", bulk=True)
    html = admin_client.get(reverse("admin:django_supalytics_outboxevent_changelist")).content
    assert b'data-lane="live">90, ETA 1.5m<' in html
    assert b'data-lane="bulk">1, ETA 1.5m<' in html


# cost


def test_health_costs_two_queries(client):
    track("a")
    with CaptureQueriesContext(connection) as ctx:
        client.get(HEALTH)
    outbox = [q["sql"] for q in ctx.captured_queries if OutboxEvent._meta.db_table in q["sql"]]
    assert len(outbox) == 2, outbox


@pytest.fixture
def large_outbox():
    """20,000 sent rows and a few live ones of each lane, analyzed."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {OutboxEvent._meta.db_table} (uuid, name, visitor_id, metadata, "
            "status, priority, attempts, next_attempt_at, lease_expires_at, last_error, "
            "created_at, sent_at) SELECT gen_random_uuid(), 'e', '', '{}', s, i % 2, 0, "
            "now() - interval '1 minute', CASE WHEN s = 'sending' THEN now() END, '', t, "
            "CASE WHEN s = 'sent' THEN t END "
            "FROM generate_series(1, 20020) AS i, LATERAL (SELECT now() - i * interval '1 minute' "
            "AS t) AS ts, "
            "LATERAL (SELECT CASE WHEN i > 20010 THEN 'sending' WHEN i > 20000 THEN 'pending' "
            "ELSE 'sent' END AS s) AS st"
        )
        cursor.execute(f"ANALYZE {OutboxEvent._meta.db_table}")


@pytest.mark.postgres
@pytest.mark.parametrize("what", ["health", "metrics"])
def test_health_and_metrics_read_no_retained_rows(large_outbox, monkeypatch, what):
    from django_supalytics import stats

    monkeypatch.setattr(stats, "EXACT_COUNT_MAX", 10_000)  # large: the sent rows are estimated
    with CaptureQueriesContext(connection) as ctx:
        getattr(health, what)()
    table = OutboxEvent._meta.db_table
    selects = [q["sql"] for q in ctx.captured_queries if f'"{table}"' in q["sql"]]
    assert len(selects) == (2 if what == "health" else 8), selects
    with connection.cursor() as cursor:
        for index, sql in enumerate(selects):
            cursor.execute(f"EXPLAIN {sql}")
            text = "\n".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan" not in text and "supalytics_created_idx" not in text, (sql, text)
            if what == "health":  # the due rows by lane, then the expired leases
                assert "Index Only Scan" in text, (sql, text)
                assert ("supalytics_due_idx", "supalytics_lease_idx")[index] in text, text
