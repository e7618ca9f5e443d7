import json
from datetime import timedelta
from io import StringIO
from unittest import mock

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_supalytics import track
from django_supalytics.models import OutboxEvent
from testproject.shop.models import Subscription
from tests.httpserver import Answer

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _published(published):
    return published


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def fails(*args):
    with pytest.raises(CommandError) as info:
        run(*args)
    return info.value


# supalytics_send


def test_send_queues_one_event_with_converted_metadata(
    published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        output = run(
            "supalytics_send",
            "setup_check",
            "--visitor-id",
            "v1",
            "--metadata",
            "plan=pro",
            "amount=29",
            "ok=true",
            "ratio=0.5",
        )
    event = OutboxEvent.objects.get()
    assert event.metadata == {"plan": "pro", "amount": 29, "ok": True, "ratio": 0.5}
    assert event.visitor_id == "v1"
    assert "Queued for nobody: the locmem backend only records hand-overs" in output
    assert [h.event_ids for h in published] == [(event.pk,)]


def test_send_now_prints_the_outcome(endpoint, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        output = run("supalytics_send", "setup_check", "--now")
    assert "Outcome: sent (status 200)" in output
    assert len(endpoint.requests) == 1
    assert not published  # not handed to a worker as well


def test_send_now_refused_exits_1(endpoint):
    endpoint.script(Answer(401, {"error": {"code": "invalid_api_key", "message": "bad key"}}))
    error = fails("supalytics_send", "setup_check", "--now")
    assert error.returncode == 1
    assert "invalid_api_key" in str(error)


def test_send_now_and_status_never_show_an_unusable_key(endpoint, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "API_KEY": "sly_secret_key\n\nX-Evil: 1"}
    error = fails("supalytics_send", "setup_check", "--now")
    assert error.returncode == 1
    assert "API_KEY contains a newline" in str(error)
    assert "sly_secret" not in str(error)
    status = run("supalytics_status") + run("supalytics_status", "--json")
    assert "API_KEY contains a newline" in status
    assert "sly_secret" not in status
    assert OutboxEvent.objects.get().status == "pending"
    assert not endpoint.requests


@pytest.mark.parametrize(
    "args",
    [
        ("Bad Name",),
        ("ok", "--visitor-id", "a b"),
        ("ok", "--metadata", "novalue"),
        ("ok", "--metadata", *[f"k{i}=1" for i in range(11)]),
    ],
)
def test_send_bad_input_exits_2_and_writes_nothing(args):
    assert fails("supalytics_send", *args).returncode == 2
    assert not OutboxEvent.objects.exists()


# supalytics_status


def test_status_counts_and_json():
    track("a")
    sent = track("b")
    OutboxEvent.objects.filter(pk=sent.pk).update(status="sent", sent_at=timezone.now())
    failed = track("c")
    OutboxEvent.objects.filter(pk=failed.pk).update(
        status="failed", failed_at=timezone.now(), last_error="invalid_name: nope"
    )
    text = run("supalytics_status")
    assert "pending" in text and "last error          invalid_name: nope" in text
    data = json.loads(run("supalytics_status", "--json"))
    assert data["counts"] == {"pending": 1, "sending": 0, "sent": 1, "failed": 1, "expired": 0}
    assert data["delivered_last_hour"] == 1
    assert data["failed_last_hour"] == 1
    assert data["oldest_pending_age"] >= 0


@pytest.mark.parametrize(
    ("code", "error", "setting"),
    [
        (
            301,
            "the API answered 301 (redirect to https://x/v1/events): SUPALYTICS['ENDPOINT'] is "
            "wrong; set it to the address the API names",
            "ENDPOINT",
        ),
        (None, "not sent: SUPALYTICS API_KEY contains a newline", "API_KEY"),
        (None, "not sent: SUPALYTICS['ENABLED'] is False", None),  # intended, not wrong
        (503, "upstream unavailable", None),
    ],
)
def test_status_names_the_setting_a_pending_rows_error_says_is_wrong(code, error, setting):
    track("a")
    OutboxEvent.objects.update(last_status_code=code, last_error=error)
    text = run("supalytics_status")
    data = json.loads(run("supalytics_status", "--json"))
    if setting:
        assert f"setting to fix      SUPALYTICS[{setting!r}] " in text
    else:
        assert "setting to fix" not in text
    assert data["setting_to_fix"] == (setting or "")


def test_status_names_the_endpoint_when_any_pending_row_was_redirected():
    """Not only the newest: a row answered 302, then rows that failed otherwise later."""
    redirected, later = track("a"), track("b")
    OutboxEvent.objects.filter(pk=redirected.pk).update(
        last_status_code=302, last_error="the API answered 302 (...)"
    )
    OutboxEvent.objects.filter(pk=later.pk).update(
        last_status_code=500,
        last_error="boom",
        next_attempt_at=timezone.now() + timedelta(hours=1),
    )
    assert "setting to fix      SUPALYTICS['ENDPOINT'] " in run("supalytics_status")


# supalytics_purge


def _aged(name, status, days):
    event = track(name)
    when = timezone.now() - timedelta(days=days)
    OutboxEvent.objects.filter(pk=event.pk).update(
        status=status,
        sent_at=when if status == "sent" else None,
        failed_at=when if status == "failed" else None,
        created_at=when,
    )
    return event


def test_purge_dry_run_deletes_nothing():
    _aged("old", "sent", 30)
    assert "Would delete 1 events" in run("supalytics_purge", "--dry-run")
    assert OutboxEvent.objects.count() == 1


def test_purge_deletes_sent_past_retention():
    _aged("old", "sent", 30)
    _aged("new", "sent", 1)
    _aged("old_failed", "failed", 30)
    assert "Deleted 1 events older than 7 days" in run("supalytics_purge")
    assert "Deleted 1" in run("supalytics_purge", "--include-failed")
    assert "Deleted 1" in run("supalytics_purge", "--older-than-days", "0")
    assert not OutboxEvent.objects.exists()


def test_purge_bad_age_exits_2():
    assert fails("supalytics_purge", "--older-than-days", "-1").returncode == 2


# supalytics_drain


def test_drain_delivers_every_due_event_oldest_first(endpoint, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "SEND_CONCURRENCY": 1}
    events = [track(f"d{i}") for i in range(7)]
    output = run("supalytics_drain", "--batch-size", "3")
    assert "Done: 7 sent." in output
    assert [r.json["name"] for r in endpoint.requests] == [e.name for e in events]


@pytest.mark.django_db(databases=["default", "other"])
def test_drain_sends_from_every_outbox_database(endpoint, settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "OUTBOX_DATABASES": ["other"]}
    from django.db import transaction

    with transaction.atomic(using="other"):
        elsewhere = track("elsewhere", using="other")
    here = track("here")
    assert "Done: 2 sent." in run("supalytics_drain")
    assert OutboxEvent.objects.using("other").get(pk=elsewhere.pk).status == "sent"
    assert OutboxEvent.objects.get(pk=here.pk).status == "sent"


def test_drain_respects_the_limit(endpoint):
    for i in range(5):
        track(f"d{i}")
    run("supalytics_drain", "--limit", "2")
    assert OutboxEvent.objects.filter(status="sent").count() == 2


def test_drain_with_nothing_due():
    assert "Nothing is due." in run("supalytics_drain")


def test_drain_with_delivery_off_exits_1(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENABLED": False}
    track("e")
    assert fails("supalytics_drain").returncode == 1


def test_drain_bad_limit_exits_2():
    assert fails("supalytics_drain", "--limit", "0").returncode == 2


# supalytics_backfill


def _subscriptions(django_user_model, count):
    with mock.patch("testproject.shop.handlers.track"):  # no signal events for the set-up
        user = django_user_model.objects.create(username="u")
        return [Subscription.objects.create(user=user, plan="pro", amount=29) for _ in range(count)]


def test_backfill_tracks_each_row_once_and_resumes(
    django_user_model, published, django_capture_on_commit_callbacks
):
    subs = _subscriptions(django_user_model, 5)
    with django_capture_on_commit_callbacks(execute=True):
        output = run(
            "supalytics_backfill",
            "shop.Subscription",
            "--event",
            "subscription_existing",
            "--metadata-from",
            "plan",
            "amount",
            "--user-from",
            "user",
            "--batch-size",
            "2",
        )
    assert "Tracked 5 subscription_existing events; 0 rows already done." in output
    events = OutboxEvent.objects.filter(name="subscription_existing")
    assert events.count() == 5
    assert events[0].metadata == {"plan": "pro", "amount": "29.00"}
    # One message per committed batch of the backfill (--batch-size 2), as track() hands over.
    assert [len(h.event_ids) for h in published] == [2, 2, 1]
    assert sorted(pk for h in published for pk in h.event_ids) == sorted(e.pk for e in events)
    # A re-run, or one after an interruption, adds nothing twice.
    assert "Tracked 0" in run(
        "supalytics_backfill", "shop.Subscription", "--event", "subscription_existing"
    )
    assert events.count() == 5
    assert subs


def test_backfill_dry_run_writes_nothing(django_user_model):
    _subscriptions(django_user_model, 3)
    output = run("supalytics_backfill", "shop.Subscription", "--event", "x", "--dry-run")
    assert "Would track 3 x events" in output
    assert not OutboxEvent.objects.exists()


@pytest.mark.parametrize(
    "args",
    [
        ("nope.Model", "--event", "x"),
        ("shop.Subscription", "--event", "Bad"),
        ("shop.Subscription", "--event", "x", "--metadata-from", "nofield"),
        ("shop.Subscription", "--event", "x", "--batch-size", "0"),
    ],
)
def test_backfill_bad_input_exits_2(args):
    assert fails("supalytics_backfill", *args).returncode == 2
    assert not OutboxEvent.objects.exists()


@pytest.mark.parametrize("days", ["nan", "inf", "-inf", "NaN", "1e300"])
def test_purge_non_finite_or_huge_age_exits_2(days):
    error = fails("supalytics_purge", f"--older-than-days={days}")
    assert error.returncode == 2
    assert "--older-than-days" in str(error)


def test_purge_non_finite_retention_setting_is_a_command_error(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "RETENTION_DAYS": float("nan")}
    assert fails("supalytics_purge").returncode == 2


def test_backfill_batch_of_one_ending_at_pk_0_terminates(django_user_model):
    import signal

    def too_long(*args):
        raise TimeoutError("supalytics_backfill did not finish")

    django_user_model.objects.create(pk=0, username="zero")
    django_user_model.objects.create(pk=1, username="one")
    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(30)
    try:
        output = run(
            "supalytics_backfill", "auth.User", "--event", "user_existing", "--batch-size", "1"
        )
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert "Tracked 2 user_existing events" in output
    assert OutboxEvent.objects.filter(name="user_existing").count() == 2


@pytest.mark.parametrize(
    ("model", "args", "message"),
    [
        ("auth.User", ("--metadata-from", "password"), "secret"),
        ("auth.User", ("--metadata-from", "username"), "secret"),
        ("auth.User", ("--metadata-from", "email"), "secret"),
        ("auth.User", ("--metadata-from", "is_superuser"), "secret"),
        ("auth.User", ("--metadata-from", "groups"), "relation"),
        ("auth.User", ("--visitor-id-from", "password"), "secret"),
        ("shop.Subscription", ("--metadata-from", "user"), "relation"),
        ("shop.Subscription", ("--user-from", "plan"), "foreign key"),
    ],
)
def test_backfill_refuses_sensitive_and_relation_fields(django_user_model, model, args, message):
    django_user_model.objects.create(username="u", password="pbkdf2_sha256$secret-hash")
    error = fails("supalytics_backfill", model, "--event", "x", *args)
    assert error.returncode == 2
    assert message in str(error)
    assert not OutboxEvent.objects.exists()


def test_backfill_re_run_after_a_purge_sends_nothing_again(
    django_user_model, published, django_capture_on_commit_callbacks
):
    from django_supalytics.models import BackfillRecord

    _subscriptions(django_user_model, 3)
    with django_capture_on_commit_callbacks(execute=True):
        run("supalytics_backfill", "shop.Subscription", "--event", "subscription_existing")
    assert sum(len(h.event_ids) for h in published) == 3
    OutboxEvent.objects.update(status="sent", sent_at=timezone.now() - timedelta(days=30))
    assert "Deleted 3" in run("supalytics_purge")
    assert BackfillRecord.objects.count() == 3  # the purge keeps what the backfill did
    with django_capture_on_commit_callbacks(execute=True):
        output = run("supalytics_backfill", "shop.Subscription", "--event", "subscription_existing")
    assert "Tracked 0 subscription_existing events; 3 rows already done." in output
    assert not OutboxEvent.objects.exists()
    assert sum(len(h.event_ids) for h in published) == 3


@pytest.mark.parametrize("mode", ["anonymize", "drop"])
def test_backfill_treats_a_suppressed_visitor_as_track_does(
    django_user_model, settings, published, django_capture_on_commit_callbacks, mode
):
    from django_supalytics import suppress_visitor, unsuppress_visitor

    settings.SUPALYTICS = {**settings.SUPALYTICS, "SUPPRESSION": mode}
    subs = _subscriptions(django_user_model, 3)
    Subscription.objects.filter(pk=subs[0].pk).update(plan="free")
    suppress_visitor("pro")  # the plan column stands in for a visitor ID a project keeps
    args = ("supalytics_backfill", "shop.Subscription", "--event", "e", "--visitor-id-from", "plan")
    with django_capture_on_commit_callbacks(execute=True):
        output = run(*args)
    visitors = sorted(OutboxEvent.objects.values_list("visitor_id", flat=True))
    if mode == "anonymize":
        assert "Tracked 3 e events; 0 rows already done." in output
        assert visitors == ["", "", "free"]
        return
    assert "Tracked 1 e events; 0 rows already done; 2 left out (suppressed visitors)." in output
    assert visitors == ["free"]
    assert sum(len(h.event_ids) for h in published) == 1
    unsuppress_visitor("pro")  # left out, not done: a re-run tracks them now
    with django_capture_on_commit_callbacks(execute=True):
        assert "Tracked 2 e events; 1 rows already done." in run(*args)
    assert OutboxEvent.objects.filter(visitor_id="pro").count() == 2


def test_status_marks_an_estimated_sent_count():
    track("a")
    with mock.patch("django_supalytics.stats.estimated_rows", return_value=2_000_000):
        text = run("supalytics_status")
        data = json.loads(run("supalytics_status", "--json"))
    assert "sent      ~1999999" in text
    assert data["sent_estimated"] is True and data["counts"]["sent"] == 1_999_999


def test_purge_include_failed_uses_failed_retention(settings):
    settings.SUPALYTICS = {**settings.SUPALYTICS, "FAILED_RETENTION_DAYS": 40}
    _aged("failed_30_days_ago", "failed", 30)
    assert "Deleted 0" in run("supalytics_purge", "--include-failed")
    assert "Deleted 1" in run("supalytics_purge", "--include-failed", "--older-than-days", "20")


def test_drain_batch_size_above_the_setting_claims_that_many(endpoint, settings):
    from django_supalytics.queryset import OutboxEventQuerySet

    settings.SUPALYTICS = {**settings.SUPALYTICS, "BATCH_SIZE": 2}
    for i in range(6):
        track(f"d{i}")
    sizes = []
    real_claim = OutboxEventQuerySet.claim

    def counting_claim(*args, **kwargs):
        claimed = real_claim(*args, **kwargs)
        sizes.append(len(claimed))
        return claimed

    with mock.patch.object(OutboxEventQuerySet, "claim", counting_claim):
        run("supalytics_drain", "--batch-size", "5")
    assert sizes[0] == 5
    assert OutboxEvent.objects.filter(status="sent").count() == 6


def test_status_tells_stuck_rows_from_rows_being_sent():
    from datetime import timedelta

    from django.utils import timezone

    live, stuck = track("live"), track("stuck")
    OutboxEvent.objects.filter(pk=live.pk).update(
        status="sending", lease_expires_at=timezone.now() + timedelta(minutes=1)
    )
    OutboxEvent.objects.filter(pk=stuck.pk).update(
        status="sending", lease_expires_at=timezone.now() - timedelta(minutes=1)
    )
    data = json.loads(run("supalytics_status", "--json"))
    assert (data["counts"]["sending"], data["stuck_sending"]) == (2, 1)
    assert "stuck sending       1" in run("supalytics_status")


@pytest.mark.django_db(databases=["default", "other"])
def test_status_shows_every_outbox_database(settings):
    from django.db import transaction

    settings.SUPALYTICS = {**settings.SUPALYTICS, "OUTBOX_DATABASES": ["other"]}
    with transaction.atomic(using="other"):
        track("elsewhere", using="other")
        track("elsewhere", using="other")
    track("here")
    output = run("supalytics_status")
    assert "database 'default'" in output and "database 'other'" in output
    data = json.loads(run("supalytics_status", "--json"))
    assert data["default"]["counts"]["pending"] == 1
    assert data["other"]["counts"]["pending"] == 2
    assert (
        json.loads(run("supalytics_status", "--json", "--database", "other"))["counts"]
        == (data["other"]["counts"])
    )


# --database


@pytest.mark.parametrize("command", ["supalytics_drain", "supalytics_status", "supalytics_purge"])
def test_an_unknown_database_alias_is_a_usage_error_naming_the_aliases(command):
    error = fails(command, "--database", "nope")
    assert error.returncode == 2
    assert "'nope' is not a database alias" in str(error)
    assert "'default'" in str(error) and "'other'" in str(error)
