"""Real-browser tests: Debian's Chromium driven by Playwright (no browser download)."""

import os
import shutil
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
