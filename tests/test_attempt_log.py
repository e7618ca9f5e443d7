"""The attempt history of a row (``OutboxEvent.attempt_log``): kept for unsuccessful attempts
only, bounded, gone with the row."""

import time

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_supalytics import delivery, track
from django_supalytics.models import ATTEMPT_LOG_MAX, OutboxEvent
from tests.httpserver import Answer

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_circuit(monkeypatch):
    """Failures of one row only: the outage circuit (three in a row) stays closed."""
    from django_supalytics import outage

    monkeypatch.setattr(outage, "THRESHOLD", 1000)


def _due_now(event):
    OutboxEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())


def test_each_failed_attempt_is_kept_and_a_success_adds_nothing(endpoint):
    endpoint.script(
        Answer(500, {"error": "boom"}, delay=0.05),
        Answer(429, {"error": "slow down"}, headers={"Retry-After": "1"}),
        Answer(503, {"error": "x" * 500}),
    )
    event = track("e")
    for _ in range(20):  # the 429 pauses sending for a second: turns without a request
        if delivery.deliver(event.pk).outcome == "sent":
            break
        _due_now(event)
        time.sleep(0.2)
    row = OutboxEvent.objects.get(pk=event.pk)
    assert row.status == "sent" and row.sent_at is not None
    log = row.attempt_log
    assert log is not None
    assert [(e["kind"], e["status"]) for e in log] == [
        ("retry", 500),
        ("rate_limited", 429),
        ("retry", 503),
    ]
    assert log[0]["error"] == "boom" and log[0]["ms"] >= 50
    assert len(log[2]["error"]) == 200  # the start of a long error
    assert all(entry["at"] <= timezone.now().isoformat() for entry in log)
    assert len(endpoint.requests) == 4  # turns held by the pause made no request, and no entry


def test_a_row_sent_at_once_writes_no_history(endpoint):
    event = track("e")
    with CaptureQueriesContext(connection) as queries:
        delivery.deliver(event.pk)
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert updates and not any("attempt_log" in sql for sql in updates)  # off the success path
    assert OutboxEvent.objects.values_list("attempt_log", flat=True).get(pk=event.pk) is None


def test_the_history_keeps_the_newest_attempts(endpoint, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "MAX_ATTEMPTS": 100}
    endpoint.script(*[Answer(500, {"error": f"n{i}"}) for i in range(ATTEMPT_LOG_MAX + 5)])
    event = track("e")
    for _ in range(ATTEMPT_LOG_MAX + 5):
        delivery.deliver(event.pk)
        OutboxEvent.objects.filter(pk=event.pk).update(next_attempt_at=F("created_at"))
    log = OutboxEvent.objects.get(pk=event.pk).attempt_log
    assert log is not None and len(log) == ATTEMPT_LOG_MAX
    assert [e["error"] for e in log] == [f"n{i}" for i in range(5, ATTEMPT_LOG_MAX + 5)]
