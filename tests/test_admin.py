from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from django_supalytics import stats, track
from django_supalytics.chart import hourly_svg
from django_supalytics.models import OutboxEvent, VisitorIdentity
from django_supalytics.receiver.models import ReceivedEvent

pytestmark = pytest.mark.django_db
CHANGELIST = "admin:django_supalytics_outboxevent_changelist"


@pytest.fixture(autouse=True)
def _published(published):
    return published


def _failed(name="bad", error="invalid_name: nope"):
    event = track(name)
    OutboxEvent.objects.filter(pk=event.pk).update(
        status="failed",
        attempts=3,
        last_status_code=400,
        last_error=error,
        failed_at=timezone.now(),
    )
    return event


def _staff(django_user_model, *perms):
    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=perms))
    return user


def test_changelist_shows_summary_and_chart(admin_client):
    track("pending_one")
    _failed()
    response = admin_client.get(reverse(CHANGELIST))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-status="pending">1<' in html
    assert 'data-status="failed">1<' in html
    assert "<svg" in html and "supalytics-chart" in html
    assert "invalid_name: nope" in html


def test_changelist_filters_by_status(admin_client):
    track("still_pending")
    _failed("went_wrong")
    response = admin_client.get(reverse(CHANGELIST), {"status__exact": "failed"})
    assert [e.name for e in response.context["cl"].result_list] == ["went_wrong"]


def test_changelist_search_by_uuid_and_visitor(admin_client):
    event = track("findme", visitor_id="vis-42")
    track("other")
    for term in (str(event.uuid), "vis-42"):
        response = admin_client.get(reverse(CHANGELIST), {"q": term})
        assert [e.name for e in response.context["cl"].result_list] == ["findme"]


def test_detail_shows_the_payload_and_never_the_key(admin_client, settings):
    event = track("shown", metadata={"plan": "pro", "amount": Decimal("29.90")})
    url = reverse("admin:django_supalytics_outboxevent_change", args=[event.pk])
    html = admin_client.get(url).content.decode()
    assert "&quot;plan&quot;: &quot;pro&quot;" in html
    assert "&quot;amount&quot;: 29.90," in html  # the exact digits sent, not 29.9
    assert settings.SUPALYTICS["API_KEY"] not in html


def test_an_unusable_key_never_shows_in_the_admin(admin_client, settings, published):
    from django_supalytics import delivery

    settings.SUPALYTICS = {**settings.SUPALYTICS, "API_KEY": "sly_secret_value\nX-Evil: 1"}
    event = track("shown")
    delivery.deliver(event.pk)
    pages = [
        admin_client.get(reverse(CHANGELIST)).content.decode(),
        admin_client.get(
            reverse("admin:django_supalytics_outboxevent_change", args=[event.pk])
        ).content.decode(),
    ]
    assert "API_KEY contains a newline" in pages[1]
    assert all("sly_secret_value" not in page for page in pages)


def test_retry_now_requeues_failed_events(
    admin_client, published, django_capture_on_commit_callbacks
):
    failed = _failed()
    sent = track("done")
    OutboxEvent.objects.filter(pk=sent.pk).update(status="sent")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse(CHANGELIST),
            {"action": "retry_now", "_selected_action": [failed.pk, sent.pk]},
            follow=True,
        )
    assert "1 event(s) queued for delivery now." in response.content.decode()
    row = OutboxEvent.objects.get(pk=failed.pk)
    assert (row.status, row.attempts, row.failed_at) == ("pending", 0, None)
    assert OutboxEvent.objects.get(pk=sent.pk).status == "sent"
    assert published[-1].event_ids == (failed.pk,)


def test_discard_deletes(admin_client):
    event = _failed()
    response = admin_client.post(
        reverse(CHANGELIST), {"action": "discard", "_selected_action": [event.pk]}, follow=True
    )
    assert "1 event(s) discarded." in response.content.decode()
    assert not OutboxEvent.objects.exists()


def test_actions_need_permissions(client, django_user_model):
    event = _failed()
    client.force_login(_staff(django_user_model, "view_outboxevent"))
    response = client.post(
        reverse(CHANGELIST), {"action": "retry_now", "_selected_action": [event.pk]}
    )
    assert OutboxEvent.objects.get(pk=event.pk).status == "failed"
    assert response.status_code in (200, 302)
    html = client.get(reverse(CHANGELIST)).content.decode()
    assert "retry_now" not in html and "discard" not in html


def test_change_permission_allows_retry_only(client, django_user_model):
    client.force_login(_staff(django_user_model, "view_outboxevent", "change_outboxevent"))
    html = client.get(reverse(CHANGELIST)).content.decode()
    assert "retry_now" in html and 'value="discard"' not in html


def test_discard_replaces_delete_selected(admin_client):
    _failed()
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert 'value="discard"' in html and 'value="delete_selected"' not in html


def test_no_add_button(admin_client):
    url = reverse("admin:django_supalytics_outboxevent_add")
    assert admin_client.get(url).status_code == 403


def test_visitor_identity_and_received_event_admins(admin_client):
    ReceivedEvent.objects.create(name="got", key_id="k", key_prefix="sly_test")
    for name in ("django_supalytics_visitoridentity", "supalytics_receiver_receivedevent"):
        assert admin_client.get(reverse(f"admin:{name}_changelist")).status_code == 200


def test_summary_figures():
    now = timezone.now()
    track("p1")
    old = track("p2")
    OutboxEvent.objects.filter(pk=old.pk).update(created_at=now - timedelta(minutes=10))
    sent = track("s")
    OutboxEvent.objects.filter(pk=sent.pk).update(status="sent", sent_at=now - timedelta(minutes=5))
    stale = track("s_old")
    OutboxEvent.objects.filter(pk=stale.pk).update(status="sent", sent_at=now - timedelta(hours=3))
    figures = stats.summary(now)
    assert figures.counts == {"pending": 2, "sending": 0, "sent": 2, "failed": 0, "expired": 0}
    assert figures.oldest_pending_age is not None
    assert 600 <= figures.oldest_pending_age < 660
    assert figures.delivered_last_hour == 1


def test_hourly_buckets_and_svg():
    now = timezone.now().replace(minute=30)
    for hours_ago, status in [(0, "sent"), (0, "sent"), (2, "sent"), (2, "failed"), (30, "sent")]:
        event = track("h")
        when = now - timedelta(hours=hours_ago)
        OutboxEvent.objects.filter(pk=event.pk).update(status=status, sent_at=when, failed_at=when)
    rows = stats.hourly(24, now)
    assert len(rows) == 24
    assert rows[-1][1:] == (2, 0)
    assert rows[-3][1:] == (1, 1)
    assert sum(d for _, d, _ in rows) == 3  # the one 30 hours ago is out of range
    svg = str(hourly_svg(rows))
    assert svg.count("<rect") == 48 and "peak 2/h" in svg


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "caf\u00e9", "<b>\x00"])
def test_visitor_identity_admin_refuses_an_invalid_id(admin_client, django_user_model, bad):
    user = django_user_model.objects.create(username="someone")
    url = reverse("admin:django_supalytics_visitoridentity_add")
    response = admin_client.post(url, {"user": user.pk, "visitor_id": bad})
    assert response.status_code == 200  # the form again, with its error
    assert not VisitorIdentity.objects.exists()
    response = admin_client.post(url, {"user": user.pk, "visitor_id": "v-valid"})
    assert response.status_code == 302
    assert VisitorIdentity.objects.get().visitor_id == "v-valid"


def test_visitor_identity_model_validation_refuses_an_invalid_id(django_user_model):
    from django.core.exceptions import ValidationError

    user = django_user_model.objects.create(username="u")
    identity = VisitorIdentity(user=user, visitor_id="a b")
    with pytest.raises(ValidationError) as info:
        identity.full_clean()
    assert "visitor_id" in info.value.message_dict


@contextmanager
def _just_before_the_write(change):
    """Let ``change`` commit right before the first UPDATE or DELETE of outbox rows runs: a
    worker (or another admin) acting between an action's SELECT and its write."""
    from django.db.models.sql import compiler

    fired: list[bool] = []

    def wrap(execute_sql):
        def wrapped(self, *args, **kwargs):
            if not fired and self.query.model is OutboxEvent:
                fired.append(True)
                change()
            return execute_sql(self, *args, **kwargs)

        return wrapped

    with (
        mock.patch.object(
            compiler.SQLUpdateCompiler,
            "execute_sql",
            wrap(compiler.SQLUpdateCompiler.execute_sql),
        ),
        mock.patch.object(
            compiler.SQLDeleteCompiler,
            "execute_sql",
            wrap(compiler.SQLDeleteCompiler.execute_sql),
        ),
    ):
        yield
    assert fired, "no outbox row was written"


def _messages(admin_client):
    response = admin_client.get(reverse(CHANGELIST))
    return [str(m) for m in response.context["messages"]]


def test_retry_now_leaves_a_row_sent_meanwhile(admin_client, django_capture_on_commit_callbacks):
    failed = _failed()

    def sent():
        OutboxEvent.objects.filter(pk=failed.pk).update(status="sent", sent_at=timezone.now())

    with _just_before_the_write(sent), django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse(CHANGELIST), {"action": "retry_now", "_selected_action": [failed.pk]}
        )
    assert _messages(admin_client) == ["0 event(s) queued for delivery now."]
    assert OutboxEvent.objects.get(pk=failed.pk).status == "sent"


def test_discard_leaves_a_row_claimed_meanwhile(admin_client):
    failed = _failed()

    def claimed():
        OutboxEvent.objects.filter(pk=failed.pk).update(status="sending")

    with _just_before_the_write(claimed):
        admin_client.post(
            reverse(CHANGELIST), {"action": "discard", "_selected_action": [failed.pk]}
        )
    assert _messages(admin_client) == ["0 event(s) discarded."]
    assert OutboxEvent.objects.get(pk=failed.pk).status == "sending"


def test_search_is_exact_on_name_and_visitor(admin_client):
    track("signup_done", visitor_id="vis-1")
    track("login", visitor_id="vis-2")
    found = admin_client.get(reverse(CHANGELIST), {"q": "signup_done"}).context["cl"].result_list
    assert [e.name for e in found] == ["signup_done"]
    found = admin_client.get(reverse(CHANGELIST), {"q": "vis-2"}).context["cl"].result_list
    assert [e.name for e in found] == ["login"]
    # A substring would read every row of a large outbox: it finds nothing.
    assert not admin_client.get(reverse(CHANGELIST), {"q": "signup"}).context["cl"].result_list


def test_status_code_filter_has_fixed_choices(admin_client):
    _failed()
    track("no_answer_yet")
    response = admin_client.get(reverse(CHANGELIST), {"code": "4xx"})
    assert [e.name for e in response.context["cl"].result_list] == ["bad"]
    response = admin_client.get(reverse(CHANGELIST), {"code": "none"})
    assert [e.name for e in response.context["cl"].result_list] == ["no_answer_yet"]


def test_the_unfiltered_list_of_a_large_outbox_is_counted_from_the_estimate(admin_client):
    track("a")
    _failed()
    with mock.patch("django_supalytics.stats.estimated_rows", return_value=5_000_000):
        unfiltered = admin_client.get(reverse(CHANGELIST)).context["cl"]
        filtered = admin_client.get(reverse(CHANGELIST), {"status__exact": "failed"}).context["cl"]
    assert unfiltered.result_count == 5_000_000
    assert filtered.result_count == 1


def test_summary_estimates_sent_rows_of_a_large_outbox():
    track("pending")
    _failed()
    with mock.patch("django_supalytics.stats.estimated_rows", return_value=1_000_000):
        figures = stats.summary()
    assert figures.sent_estimated
    counts = {"pending": 1, "sending": 0, "failed": 1, "expired": 0, "sent": 999_998}
    assert figures.counts == counts


@pytest.mark.postgres
def test_estimated_rows_reads_the_planner_statistics(monkeypatch):
    from django.db import connection

    for i in range(3):
        track(f"e{i}")
    assert stats.estimated_rows() is None  # small: counted exactly
    monkeypatch.setattr(stats, "EXACT_COUNT_MAX", 0)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {OutboxEvent._meta.db_table}")
    assert stats.estimated_rows() == 3


def test_visitor_identity_search_follows_the_user_model():
    from django.contrib.auth.models import Group, User

    from django_supalytics.admin import user_search_fields

    assert user_search_fields(User) == ["user__username", "user__email"]

    class EmailOnly(User):  # a custom user model whose login is its email
        USERNAME_FIELD = "email"

        class Meta:
            proxy = True
            app_label = "auth"

    assert user_search_fields(EmailOnly) == ["user__email"]
    assert user_search_fields(Group) == []  # neither field: visitor ID search only


def test_visitor_identity_admin_search_works(admin_client, django_user_model):
    user = django_user_model.objects.create(username="findme", email="f@example.com")
    VisitorIdentity.objects.create(user=user, visitor_id="v-search")
    url = reverse("admin:django_supalytics_visitoridentity_changelist")
    for term in ("v-search", "findme", "f@example.com"):
        assert "v-search" in admin_client.get(url, {"q": term}).content.decode()


@pytest.mark.django_db(databases=["default", "other"])
def test_each_outbox_database_has_its_page_change_view_and_actions(
    admin_client, settings, published
):
    """OUTBOX_DATABASES: a "database" filter picks the outbox database; the list, the event's
    page and the actions are that database's."""
    from django.db import transaction

    settings.SUPALYTICS = {**settings.SUPALYTICS, "OUTBOX_DATABASES": ["other"]}
    with transaction.atomic(using="other"):
        elsewhere = track("only_elsewhere", using="other")
    OutboxEvent.objects.using("other").filter(pk=elsewhere.pk).update(status="failed")
    track("only_here")
    here_page = admin_client.get(reverse(CHANGELIST)).content.decode()
    other_page = admin_client.get(reverse(CHANGELIST), {"database": "other"}).content.decode()
    assert "only_here" in here_page and "only_elsewhere" not in here_page
    assert "only_elsewhere" in other_page and "only_here" not in other_page
    change = reverse("admin:django_supalytics_outboxevent_change", args=[elsewhere.pk])
    response = admin_client.get(change, {"_changelist_filters": "database=other"})
    assert response.status_code == 200 and "only_elsewhere" in response.content.decode()
    admin_client.post(
        reverse(CHANGELIST) + "?database=other",
        {"action": "retry_now", "_selected_action": [elsewhere.pk]},
    )
    assert OutboxEvent.objects.using("other").get(pk=elsewhere.pk).status == "pending"
    # The event page's buttons keep the database (through ``_changelist_filters``).
    page = admin_client.get(change, {"_changelist_filters": "database=other"}).content.decode()
    assert "discard/?_changelist_filters=database%3Dother" in page
    response = admin_client.post(
        reverse(DISCARD, args=[elsewhere.pk]) + "?_changelist_filters=database%3Dother"
    )
    assert response.url == reverse(CHANGELIST) + "?database=other"
    assert not OutboxEvent.objects.using("other").exists()


# The event's page as a console, the list's columns, and "retry failed since".

CHANGE = "admin:django_supalytics_outboxevent_change"
RETRY = "admin:django_supalytics_outboxevent_retry"
DISCARD = "admin:django_supalytics_outboxevent_discard"
RETRY_SINCE = "admin:django_supalytics_outboxevent_retry_since"


def _row(status="failed", code=400, **fields):
    event = track(fields.pop("name", "row"))
    times = {"sent": "sent_at", "failed": "failed_at"}
    if status in times:
        fields.setdefault(times[status], timezone.now())
    OutboxEvent.objects.filter(pk=event.pk).update(status=status, last_status_code=code, **fields)
    return OutboxEvent.objects.get(pk=event.pk)


def _page(client, row):
    response = client.get(reverse(CHANGE, args=[row.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_the_event_page_has_no_save_or_delete(admin_client):
    html = _page(admin_client, _row())
    for button in ('name="_save"', 'name="_continue"', 'name="_addanother"', "deletelink"):
        assert button not in html
    assert 'id="supalytics-retry"' in html and 'id="supalytics-discard"' in html


def test_the_event_page_cannot_be_saved(admin_client):
    row = _row()
    response = admin_client.post(reverse(CHANGE, args=[row.pk]), {"name": "edited"})
    assert response.status_code == 403
    assert OutboxEvent.objects.get(pk=row.pk).name == "row"


@pytest.mark.parametrize(
    ("status", "retry", "discard"),
    [
        ("failed", True, True),
        ("pending", True, True),
        ("sent", False, True),
        ("sending", False, False),
    ],
)
def test_the_event_page_offers_what_the_status_allows(admin_client, status, retry, discard):
    html = _page(admin_client, _row(status))
    assert ('id="supalytics-retry"' in html) is retry
    assert ('id="supalytics-discard"' in html) is discard


def test_a_view_only_user_sees_no_buttons_and_cannot_press_them(client, django_user_model):
    row = _row()
    client.force_login(_staff(django_user_model, "view_outboxevent"))
    html = _page(client, row)
    assert "supalytics-retry" not in html and "supalytics-discard" not in html
    assert "retry-failed-since" not in client.get(reverse(CHANGELIST)).content.decode()
    for view in (RETRY, DISCARD):
        assert client.post(reverse(view, args=[row.pk])).status_code == 403
    assert client.post(reverse(RETRY_SINCE), {"since": "2020-01-01T00:00"}).status_code == 403
    assert OutboxEvent.objects.get(pk=row.pk).status == "failed"


def test_the_buttons_need_the_actions_permissions(client, django_user_model):
    row = _row()
    client.force_login(_staff(django_user_model, "view_outboxevent", "change_outboxevent"))
    html = _page(client, row)
    assert 'id="supalytics-retry"' in html and "supalytics-discard" not in html
    assert client.post(reverse(DISCARD, args=[row.pk])).status_code == 403
    assert OutboxEvent.objects.filter(pk=row.pk).exists()


def test_the_retry_button_requeues_the_row(
    admin_client, published, django_capture_on_commit_callbacks
):
    from django.contrib.admin.models import LogEntry

    row = _row(attempts=16)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse(RETRY, args=[row.pk]))
    assert response.status_code == 302 and response.url == reverse(CHANGE, args=[row.pk])
    row.refresh_from_db()
    assert (row.status, row.attempts, row.failed_at) == ("pending", 0, None)
    assert published[-1].event_ids == (row.pk,)
    assert LogEntry.objects.get().object_id == str(row.pk)
    assert _messages(admin_client) == ["Queued for delivery now."]


def test_the_retry_button_leaves_a_sent_row_as_it_is(admin_client, published):
    row = _row("sent", code=202)
    admin_client.post(reverse(RETRY, args=[row.pk]))
    assert OutboxEvent.objects.get(pk=row.pk).status == "sent"
    assert _messages(admin_client) == ["Not retried: the event is sent now."]
    assert not published


def test_the_buttons_answer_post_only(admin_client):
    row = _row()
    assert admin_client.get(reverse(RETRY, args=[row.pk])).status_code == 405
    assert admin_client.get(reverse(DISCARD, args=[row.pk])).status_code == 405


def test_the_discard_button_deletes_and_returns_to_the_list(admin_client):
    row = _row()
    response = admin_client.post(reverse(DISCARD, args=[row.pk]))
    assert response.status_code == 302 and response.url == reverse(CHANGELIST)
    assert not OutboxEvent.objects.exists()
    assert _messages(admin_client) == ["Event discarded."]


def test_the_discard_button_leaves_a_row_a_worker_holds(admin_client):
    row = _row("sending")
    response = admin_client.post(reverse(DISCARD, args=[row.pk]))
    assert response.url == reverse(CHANGE, args=[row.pk])
    assert OutboxEvent.objects.get(pk=row.pk).status == "sending"


def test_the_event_page_shows_the_attempt_timeline(admin_client):
    log = [
        {
            "at": "2025-03-03T14:00:00.000+00:00",
            "kind": "retry",
            "status": 503,
            "error": "busy",
            "ms": 1234,
        },
        {
            "at": "2025-03-03T14:00:05.000+00:00",
            "kind": "rate_limited",
            "status": 429,
            "error": "slow down",
            "ms": 12,
        },
        {
            "at": "2025-03-03T14:01:00.000+00:00",
            "kind": "deferred",
            "status": None,
            "error": "timed out",
            "ms": None,
        },
    ]
    row = _row("sent", code=202, attempt_log=log, attempts=2)
    html = _page(admin_client, row)
    assert html.count('class="supalytics-attempt"') == 3
    assert "1,234 ms" in html and "rate limited (429)" in html and "timed out" in html
    assert 'id="supalytics-sent-line"' in html


def test_the_event_page_names_the_setting_to_fix(admin_client):
    html = _page(admin_client, _row(code=401, last_error="invalid API key"))
    assert 'Fix <code>SUPALYTICS["API_KEY"]</code> first' in html
    assert "supalytics-fix" not in _page(admin_client, _row(code=503, last_error="busy"))


def test_the_event_page_shows_the_visitor_user_and_key(admin_client, django_user_model):
    user = django_user_model.objects.create(username="ada")
    event = track("seen", visitor_id="vis-7", user=user)
    html = _page(admin_client, event)
    assert str(event.uuid) in html and "vis-7" in html and ">ada</a>" in html
    assert "Live lane" in html


def _cells(client, **query):
    from django.utils.html import strip_tags

    response = client.get(reverse(CHANGELIST), query)
    cl = response.context["cl"]
    return {
        row.name: {
            column: strip_tags(str(getattr(cl.model_admin, column)(row)))
            for column in ("status_badge", "lane", "next_step", "age")
        }
        for row in cl.result_list
    }


def test_the_list_shows_a_next_attempt_for_pending_rows_only(admin_client):
    track("waiting")
    _row("sent", code=202, name="done")
    cells = _cells(admin_client)
    assert cells["waiting"]["next_step"] == "now"
    assert cells["done"]["next_step"] == ""
    assert "Sent" in cells["done"]["status_badge"] and "\u2713" in cells["done"]["status_badge"]


@pytest.mark.parametrize(
    ("code", "hint"),
    [(401, "fix API_KEY first"), (404, "fix ENDPOINT first"), (503, "retry helps")],
)
def test_the_list_says_whether_a_retry_helps(admin_client, code, hint):
    _row(code=code, name="failed_row")
    track("pending_row")
    cells = _cells(admin_client)
    assert cells["failed_row"]["next_step"] == hint
    assert cells["pending_row"]["next_step"] == "now"


def test_the_list_shows_the_lane_and_filters_by_it(admin_client):
    track("live_one")
    track("bulk_one", bulk=True)
    assert _cells(admin_client)["bulk_one"]["lane"] == "bulk"
    assert list(_cells(admin_client, lane="bulk")) == ["bulk_one"]
    assert list(_cells(admin_client, lane="live")) == ["live_one"]


@pytest.mark.parametrize(
    ("seconds", "text"), [(12, "12 s"), (200, "3 min"), (7300, "2 h"), (59, "59 s")]
)
def test_ages_read_to_the_second_when_recent(seconds, text):
    from django.utils.html import strip_tags

    from django_supalytics.admin_list import ago

    now = timezone.now()
    assert strip_tags(ago(now - timedelta(seconds=seconds), now)) == text


def test_older_ages_read_as_dates():
    from datetime import datetime
    from datetime import timezone as tz

    from django.utils.html import strip_tags

    from django_supalytics.admin_list import ago

    now = datetime(2025, 6, 1, 12, tzinfo=tz.utc)
    assert strip_tags(ago(datetime(2025, 5, 3, 12, tzinfo=tz.utc), now)) == "May 3"
    assert strip_tags(ago(datetime(2024, 5, 3, 12, tzinfo=tz.utc), now)) == "2024-05-03"


@pytest.mark.parametrize("by", ["uuid", "visitor_id", "name"])
def test_search_finds_an_event_by_idempotency_key_visitor_or_name(admin_client, by):
    wanted = track("wanted_event", visitor_id="vis-wanted")
    track("other_event", visitor_id="vis-other")
    term = str(getattr(wanted, by))
    assert list(_cells(admin_client, q=term)) == ["wanted_event"]


def test_the_retry_since_page_shows_the_failed_count(admin_client):
    _row()
    _row()
    html = admin_client.get(reverse(RETRY_SINCE)).content.decode()
    assert "<strong>2</strong> failed events" in html
    assert 'id="supalytics-retry-since"' in admin_client.get(reverse(CHANGELIST)).content.decode()


@pytest.mark.django_db(transaction=True)
def test_retry_since_retries_in_the_background_and_says_how_many(
    admin_client, published, monkeypatch
):
    from django_supalytics import bulk

    started = []

    def retry_failed_since(since, **kwargs):
        started.append((since, kwargs))
        thread = real(since, **kwargs)
        thread.join(10)
        return thread

    real = bulk.retry_failed_since
    monkeypatch.setattr(bulk, "retry_failed_since", retry_failed_since)
    long_ago = timezone.now() - timedelta(days=2)
    old = _row(code=503, failed_at=long_ago)
    recent = [_row(code=503, name="signed_up"), _row(code=401, name="signed_up"), _row(code=503)]
    response = admin_client.post(
        reverse(RETRY_SINCE),
        {
            "since": (timezone.now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
            "status_code": "503",
        },
    )
    assert response.status_code == 302 and response.url == reverse(CHANGELIST)
    message = _messages(admin_client)[0]
    assert message.startswith("Retrying 2 event(s) that failed since") and "background" in message
    ((_, kwargs),) = started
    assert kwargs["status_code"] == 503 and kwargs["name"] is None
    assert kwargs["user"].username == "admin"
    statuses = dict(OutboxEvent.objects.values_list("pk", "status"))
    assert statuses == {
        old.pk: "failed",
        recent[0].pk: "pending",
        recent[1].pk: "failed",
        recent[2].pk: "pending",
    }


def test_retry_since_refuses_a_form_without_a_time(admin_client, monkeypatch):
    from django_supalytics import bulk

    monkeypatch.setattr(bulk, "retry_failed_since", lambda *a, **k: pytest.fail("started"))
    response = admin_client.post(reverse(RETRY_SINCE), {"since": "", "name": "x"})
    assert response.status_code == 200 and "This field is required." in response.content.decode()
