"""Real-browser tests: Debian's Chromium driven by Playwright (no browser download)."""

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from django.utils import timezone

from django_supalytics.models import OutboxEvent, VisitorIdentity

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def page(live_server, monkeypatch):
    if not Path(CHROMIUM).exists():
        if os.environ.get("SUPALYTICS_REQUIRE_SERVICES") == "1":
            pytest.fail("Chromium is not installed (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are
    # still synchronous and outside it.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context(base_url=live_server.url)
        yield context.new_page()
        browser.close()
        # The test ran in Playwright's greenlet, whose context has its own connection.
        connections.close_all()


def test_signup_stores_the_cookie_set_by_javascript(page):
    page.goto("/signup/")
    cookie = page.evaluate("window.supalytics.visitorId")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert cookie and cookies["supalytics_vid"] == cookie
    page.fill("#id_username", "grace")
    page.fill("#id_password1", "browser-pass-123")
    page.fill("#id_password2", "browser-pass-123")
    page.click("#signup")
    page.wait_for_url("**/")
    assert cookie in page.text_content("#visitor")
    identity = VisitorIdentity.objects.get(user__username="grace")
    assert identity.visitor_id == cookie
    assert OutboxEvent.objects.get(name="signed_up").visitor_id == cookie


def test_admin_retry_now_on_failed_events(page, django_user_model):
    django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123")
    for i in range(3):
        OutboxEvent.objects.create(
            name=f"broken_{i}",
            status="failed",
            attempts=16,
            last_status_code=503,
            last_error="gave up after 16 attempts; last: unavailable",
            failed_at=timezone.now(),
        )
    OutboxEvent.objects.create(name="fine", status="sent", sent_at=timezone.now(), attempts=1)
    page.goto("/admin/login/?next=/admin/django_supalytics/outboxevent/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "root-pass-123")
    page.click("input[type=submit]")
    page.click("#changelist-filter a[href*='status__exact=failed']")
    page.wait_for_url("**status__exact=failed**")
    assert page.locator("#result_list tbody tr").count() == 3
    page.check("#action-toggle")
    page.select_option("select[name=action]", "retry_now")
    page.click("button[name=index]")
    message = page.text_content("ul.messagelist")
    assert "3 event(s) queued for delivery now." in message
    artifacts = Path(settings.TEST_ARTIFACTS)
    artifacts.mkdir(exist_ok=True)
    page.screenshot(path=str(artifacts / "admin-retry-now.png"), full_page=True)
    assert OutboxEvent.objects.filter(status="pending").count() == 3


def screenshot_dir() -> Path:
    """Where screenshots go: the test artifacts, or ``docs/images`` when
    ``SUPALYTICS_SCREENSHOTS=docs`` (``make screenshots``, which refreshes the docs' copies)."""
    if os.environ.get("SUPALYTICS_SCREENSHOTS") == "docs":
        where = Path(__file__).resolve().parent.parent / "docs" / "images"
    else:
        where = Path(settings.TEST_ARTIFACTS)
    where.mkdir(parents=True, exist_ok=True)
    return where


def test_admin_summary_shows_the_lanes_their_eta_and_expired_rows(page, django_user_model):
    """A backfill behind, a few live events due, one expired: the summary names each lane's
    due rows and ETA at the limit, and counts the expired row."""
    from django.db.models import F

    django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123")
    OutboxEvent.objects.bulk_create(
        [OutboxEvent(name="order_existing", priority=OutboxEvent.Priority.BULK) for _ in range(490)]
        + [OutboxEvent(name="signed_up") for _ in range(4)]
        + [OutboxEvent(name="page_viewed", status="expired")]
        + [OutboxEvent(name="upgraded", status="sent", sent_at=timezone.now(), attempts=1)]
    )
    three_minutes = timedelta(minutes=3)
    OutboxEvent.objects.filter(status="pending").update(
        created_at=F("created_at") - three_minutes,
        next_attempt_at=F("next_attempt_at") - three_minutes,
    )
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto("/admin/login/?next=/admin/django_supalytics/outboxevent/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "root-pass-123")
    page.click("input[type=submit]")
    page.wait_for_selector("#supalytics-summary")
    assert page.text_content("[data-status=expired]").strip() == "1"
    live, bulk = page.text_content("[data-lane=live]"), page.text_content("[data-lane=bulk]")
    assert live.startswith("4,") and bulk.startswith("490,")
    assert "ETA" in live and "ETA" in bulk
    path = screenshot_dir() / "admin-summary.png"
    page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": 1280, "height": 330})
    assert path.stat().st_size > 10_000


def test_privacy_mode_header_reaches_the_backend(page):
    """The template tag adds window.supalytics.visitorId to same-origin fetch calls."""
    page.goto("/")
    html = page.evaluate(
        """async () => {
            window.supalytics.visitorId = "privacy-mode-vid";
            const response = await fetch("/");
            return await response.text();
        }"""
    )
    assert "privacy-mode-vid" in html and "(from header)" in html


def test_privacy_mode_header_reaches_the_backend_through_xmlhttprequest(page):
    """htmx, axios and jQuery send with XMLHttpRequest: the header is added there too, only to
    this site, and a header the page set itself is kept."""
    page.goto("/")
    own, theirs = page.evaluate(
        """async () => {
            window.supalytics.visitorId = "xhr-vid";
            function get(set) {
                return new Promise((resolve) => {
                    const xhr = new XMLHttpRequest();
                    xhr.open("GET", "/");
                    if (set) xhr.setRequestHeader("X-Supalytics-Visitor-Id", "page-set-vid");
                    xhr.onload = () => resolve(xhr.responseText);
                    xhr.send();
                });
            }
            return [await get(false), await get(true)];
        }"""
    )
    assert "xhr-vid" in own and "(from header)" in own
    assert "page-set-vid" in theirs and "xhr-vid" not in theirs


# The outbox admin as an operator's console: the list, an event's page, "retry failed since".

LIST = "/admin/django_supalytics/outboxevent/"
#: WCAG's contrast ratio between an element's text and its background colour, both computed.
CONTRAST = """(el) => {
    const rgb = (c) => c.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number);
    const f = (v) => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    const lum = ([r, g, b]) => 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    const style = getComputedStyle(el);
    const [a, b] = [lum(rgb(style.color)), lum(rgb(style.backgroundColor))].sort((x, y) => y - x);
    return (a + 0.05) / (b + 0.05);
}"""


def _log_in(page, django_user_model, next_url=LIST):
    django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"/admin/login/?next={next_url}")
    page.fill("#id_username", "root")
    page.fill("#id_password", "root-pass-123")
    page.click("input[type=submit]")
    page.wait_for_url(f"**{next_url}")


def _dark(page):
    """Django's theme toggle, as a click on it leaves it: ``localStorage.theme``."""
    page.evaluate("localStorage.setItem('theme', 'dark')")
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"


def _attempts(last, *answers):
    """``attempt_log`` entries four minutes apart, the last at ``last``."""
    start = last - timedelta(minutes=4 * (len(answers) - 1))
    return [
        {
            "at": (start + timedelta(minutes=4 * i)).isoformat(timespec="milliseconds"),
            "kind": kind,
            "status": status,
            "error": error,
            "ms": ms,
        }
        for i, (kind, status, error, ms) in enumerate(answers)
    ]


def _outbox():
    """A morning's outbox: live and bulk rows due, one in flight, some sent, a few failed (one
    for a key that was rotated, one for a wrong endpoint), one expired."""
    now = timezone.now()
    ago = lambda **kw: now - timedelta(**kw)  # noqa: E731
    rows = [
        OutboxEvent(name="signed_up", visitor_id="v-1", created_at=ago(seconds=12)),
        OutboxEvent(
            name="order_existing",
            priority=OutboxEvent.Priority.BULK,
            created_at=ago(minutes=3),
            next_attempt_at=now + timedelta(minutes=2),
            attempts=1,
            last_status_code=503,
            last_error="503 Service Unavailable",
        ),
        OutboxEvent(name="page_viewed", status="sending", created_at=ago(seconds=40), attempts=1),
        OutboxEvent(
            name="subscription_renewed_after_trial_period",
            status="sent",
            created_at=ago(hours=2),
            sent_at=ago(hours=2),
            attempts=2,
            last_status_code=202,
            attempt_log=_attempts(
                ago(hours=2, minutes=1), ("retry", 503, "Service Unavailable", 812)
            ),
        ),
        OutboxEvent(
            name="upgraded",
            status="failed",
            created_at=ago(minutes=25),
            failed_at=ago(minutes=5),
            attempts=3,
            last_status_code=401,
            last_error="401 Unauthorized: invalid API key",
            visitor_id="v-3f9c2a71",
            metadata={"plan": "pro", "seats": 5},
            attempt_log=_attempts(
                ago(minutes=5),
                ("retry", 503, "503 Service Unavailable", 30_012),
                ("rate_limited", 429, "429 Too Many Requests: retry after 2 s", 41),
                ("retry", 502, "502 Bad Gateway", 95),
                ("failed", 401, "401 Unauthorized: invalid API key", 63),
            ),
        ),
        OutboxEvent(
            name="invoice_paid",
            status="failed",
            created_at=ago(days=3),
            failed_at=ago(days=3),
            attempts=1,
            last_status_code=404,
            last_error="404 Not Found",
        ),
        OutboxEvent(
            name="trial_started",
            status="failed",
            created_at=ago(minutes=50),
            failed_at=ago(minutes=30),
            attempts=16,
            last_status_code=500,
            last_error="gave up after 16 attempts; last: 500 Internal Server Error",
        ),
        OutboxEvent(name="page_viewed", status="expired", created_at=ago(days=2)),
    ]
    OutboxEvent.objects.bulk_create(rows)
    return {row.name: row for row in OutboxEvent.objects.all()}


def _fits(page):
    """The page and the list's table, each within its width at 1,280 px."""
    widths = page.evaluate(
        """() => ({
            page: document.documentElement.scrollWidth,
            table: document.querySelector('#result_list').scrollWidth,
            box: document.querySelector('.results').clientWidth,
        })"""
    )
    assert widths["page"] <= 1280, widths
    assert widths["table"] <= widths["box"], widths


def test_admin_list_reads_at_a_glance_in_light_and_dark(page, django_user_model):
    """Badges with their icon, the lane, ages to the second, a next attempt for pending rows
    only, whether a retry helps; every column within 1,280 px; readable in both themes."""
    _outbox()
    _log_in(page, django_user_model)
    _fits(page)
    rows = {
        page.text_content(f"#result_list tbody tr:nth-child({i}) th").strip(): page.locator(
            f"#result_list tbody tr:nth-child({i})"
        )
        for i in range(1, page.locator("#result_list tbody tr").count() + 1)
    }
    upgraded = rows["upgraded"]
    assert upgraded.locator(".supalytics-badge--failed").is_visible()
    assert "\u2715 Failed" in upgraded.text_content()
    assert upgraded.locator(".field-next_step").text_content() == "fix API_KEY first"
    assert rows["invoice_paid"].locator(".field-next_step").text_content() == "fix ENDPOINT first"
    assert rows["trial_started"].locator(".field-next_step").text_content() == "retry helps"
    assert rows["signed_up"].locator(".field-age").text_content().endswith(" s")
    assert rows["order_existing"].locator(".field-lane").text_content() == "bulk"
    assert rows["order_existing"].locator(".field-next_step").text_content().startswith("in ")
    sent = rows["subscription_renewed_after_trial_period"]
    assert sent.locator(".field-next_step").text_content() == ""
    badges = page.locator("#result_list .supalytics-badge")
    light = [badges.nth(i).evaluate(CONTRAST) for i in range(badges.count())]
    assert min(light) >= 4.5, light
    page.screenshot(path=str(screenshot_dir() / "admin-list.png"), full_page=True)
    _dark(page)
    _fits(page)
    dark = [badges.nth(i).evaluate(CONTRAST) for i in range(badges.count())]
    assert min(dark) >= 4.5, dark
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(18, 18, 18)"  # Django's dark --body-bg
    page.screenshot(path=str(screenshot_dir() / "admin-list-dark.png"), full_page=True)


def test_admin_event_page_is_a_console(page, django_user_model):
    """No Save or Delete; the facts, the payload and the attempt timeline; Retry now turns a
    failed row pending, Discard deletes it."""
    rows = _outbox()
    upgraded = rows["upgraded"]
    _log_in(page, django_user_model, f"{LIST}{upgraded.pk}/change/")
    for absent in ("input[name=_save]", "input[name=_continue]", ".deletelink"):
        assert page.locator(absent).count() == 0
    assert page.locator("#supalytics-timeline tbody tr").count() == 4
    assert "rate limited (429)" in page.text_content("#supalytics-timeline")
    assert "30,012 ms" in page.text_content("#supalytics-timeline")
    assert 'SUPALYTICS["API_KEY"]' in page.text_content("#supalytics-fix")
    assert page.text_content("#supalytics-uuid") == str(upgraded.uuid)
    assert '"seats": 5' in page.text_content("#supalytics-payload")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.screenshot(path=str(screenshot_dir() / "admin-event.png"), full_page=True)
    _dark(page)
    page.screenshot(path=str(screenshot_dir() / "admin-event-dark.png"), full_page=True)
    page.evaluate("localStorage.setItem('theme', 'light')")

    page.click("#supalytics-retry")
    page.wait_for_selector("ul.messagelist")
    assert "Queued for delivery now." in page.text_content("ul.messagelist")
    upgraded.refresh_from_db()
    assert (upgraded.status, upgraded.attempts) == ("pending", 0)
    assert "Pending" in page.text_content("#supalytics-status")

    page.click("#supalytics-discard")
    page.wait_for_url(f"**{LIST}")
    assert "Event discarded." in page.text_content("ul.messagelist")
    assert not OutboxEvent.objects.filter(pk=upgraded.pk).exists()


def test_admin_event_page_of_a_sent_row_ends_with_its_sending(page, django_user_model):
    sent = _outbox()["subscription_renewed_after_trial_period"]
    _log_in(page, django_user_model, f"{LIST}{sent.pk}/change/")
    lines = page.locator("#supalytics-timeline tbody tr")
    assert lines.count() == 2
    assert "retried later" in lines.nth(0).text_content()
    assert "Sent" in lines.nth(1).text_content() and "202" in lines.nth(1).text_content()
    assert page.locator("#supalytics-retry").count() == 0


def test_admin_retry_failed_since(page, django_user_model):
    """After an outage: every event failed since T, retried in the background; the page says
    how many, and they turn pending within seconds."""
    import time

    rows = _outbox()
    _log_in(page, django_user_model)
    page.click("#supalytics-retry-since")
    page.wait_for_selector("#supalytics-retry-since-form")
    assert "3 failed events" in page.text_content("#supalytics-failed-now")
    since = timezone.localtime() - timedelta(hours=1)
    page.fill("#id_since", since.strftime("%Y-%m-%dT%H:%M"))
    page.locator("#id_since").blur()
    page.screenshot(path=str(screenshot_dir() / "admin-retry-since.png"), full_page=True)
    page.click("#supalytics-retry-since-submit")
    page.wait_for_url(f"**{LIST}")
    message = page.text_content("ul.messagelist")
    assert "Retrying 2 event(s) that failed since" in message and "background" in message
    recent = [rows["upgraded"].pk, rows["trial_started"].pk]
    deadline = time.monotonic() + 10
    while OutboxEvent.objects.filter(pk__in=recent, status="pending").count() < 2:
        assert time.monotonic() < deadline, "the failed events were not retried within 10 s"
        time.sleep(0.1)
    assert OutboxEvent.objects.get(pk=rows["invoice_paid"].pk).status == "failed"
