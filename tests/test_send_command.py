"""``supalytics_send`` says who will deliver what it queued: the configured backend."""

import pytest
from django.core.management import call_command

from django_supalytics.models import OutboxEvent

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("backend", "said"),
    [
        ("cron", "Queued for the next supalytics_drain (DELIVERY_BACKEND is 'cron')."),
        ("celery", "Queued for the Celery worker."),
    ],
)
def test_send_names_the_configured_backend(settings, capsys, backend, said, monkeypatch):
    from django_supalytics.backends.celery import CeleryBackend

    monkeypatch.setattr(
        CeleryBackend, "enqueue", lambda self, ids, countdown=None, using=None: True
    )
    settings.SUPALYTICS = {**settings.SUPALYTICS, "DELIVERY_BACKEND": backend, "ENQUEUE": "inline"}
    call_command("supalytics_send", "setup_check")
    assert said in capsys.readouterr().out
    assert OutboxEvent.objects.get().name == "setup_check"


@pytest.mark.parametrize("now", [[], ["--now"]])
def test_send_says_so_when_suppression_drops_the_event(settings, capsys, published, now):
    from django_supalytics import suppress_visitor

    settings.SUPALYTICS = {**settings.SUPALYTICS, "SUPPRESSION": "drop"}
    suppress_visitor("v-objects")
    call_command("supalytics_send", "setup_check", "--visitor-id", "v-objects", *now)
    assert "Not tracked: visitor 'v-objects' is suppressed." in capsys.readouterr().out
    assert not OutboxEvent.objects.exists() and published == []


def test_send_now_anonymizes_a_suppressed_visitor(settings, capsys, endpoint):
    from django_supalytics import suppress_visitor

    settings.SUPALYTICS = {**settings.SUPALYTICS, "SUPPRESSION": "anonymize"}
    suppress_visitor("v-objects")
    call_command("supalytics_send", "setup_check", "--visitor-id", "v-objects", "--now")
    assert "Outcome: sent" in capsys.readouterr().out
    assert OutboxEvent.objects.get().visitor_id == ""
    assert "v-objects" not in endpoint.requests[0].body.decode()
