"""``make demo``: the whole flow on embedded defaults, then a table of tracked vs received.

Starts the site (which is also the mock receiver), a Celery worker and beat on a filesystem
broker (or CELERY_BROKER_URL), and plays a visitor: sign up with a visitor ID, subscribe,
upgrade, a declined payment that rolls back, a payment webhook, and a receiver outage that
heals. Ends by itself and leaves nothing running.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import requests

from testproject.processes import ROOT, Processes, wait_for_port

PORT = int(os.environ.get("DEMO_PORT", "8765"))
VAR = Path(os.environ.get("TESTPROJECT_VAR_DIR", ROOT / ".var" / "demo"))
SITE = f"http://127.0.0.1:{PORT}"
VISITOR = "demo-visitor-7f3a"
OUTAGE_REQUESTS = 6
#: Room, on top of what delivery guarantees, for a slow machine: process start-up, SQLite lock
#: waits (each up to its 20-s timeout), a transient error's task retry.
MARGIN_SECONDS = 60.0


def deadline_seconds() -> float:
    """How long delivery may take at most: one row could meet every failed request of the
    outage, and each retry waits at most its backoff cap (full jitter draws below it)."""
    from django_supalytics.conf import conf

    waits = (
        min(conf.BACKOFF_MAX, conf.BACKOFF_BASE * 2.0 ** (n - 1))
        for n in range(1, OUTAGE_REQUESTS + 1)
    )
    total = sum(waits) + MARGIN_SECONDS
    if conf.BACKOFF_MAX > conf.MAX_COUNTDOWN:
        total += conf.SWEEP_GRACE + 30  # longer waits come back through the sweeper's beat
    return total


def setup_django() -> None:
    os.environ["TESTPROJECT_VAR_DIR"] = str(VAR)
    os.environ["SUPALYTICS_ENDPOINT"] = f"{SITE}/v1/events"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import django

    django.setup()


def step(text: str) -> None:
    print(f"  - {text}", flush=True)


def csrf(session: requests.Session, path: str) -> str:
    session.get(f"{SITE}{path}", timeout=10).raise_for_status()
    return session.cookies["csrftoken"]


def post(session: requests.Session, path: str, data: dict[str, str]) -> requests.Response:
    token = csrf(session, "/" if path != "/signup/" else path)
    return session.post(
        f"{SITE}{path}",
        data={**data, "csrfmiddlewaretoken": token},
        headers={"Referer": SITE},
        timeout=10,
    )


def scenario() -> None:
    browser = requests.Session()
    # Cookie mode: the vendor's script has set the first-party cookie.
    browser.cookies.set("supalytics_vid", VISITOR, domain="127.0.0.1")
    step(f"a visitor ({VISITOR}) signs up")
    post(
        browser,
        "/signup/",
        {"username": "ada", "password1": "demo-pass-123", "password2": "demo-pass-123"},
    ).raise_for_status()
    step("subscribes to pro, then upgrades to enterprise")
    post(browser, "/plan/", {"plan": "pro"}).raise_for_status()
    post(browser, "/plan/", {"plan": "enterprise"}).raise_for_status()
    step("a downgrade whose payment is declined: rolled back, so nothing is sent")
    declined = post(browser, "/plan/", {"plan": "free", "fail": "1"})
    assert declined.status_code == 402, declined.status_code
    step(f"the receiver goes down (503 for the next {OUTAGE_REQUESTS} requests) ...")
    requests.post(
        f"{SITE}/v1/_control/faults", json={"status": 503, "count": OUTAGE_REQUESTS}, timeout=10
    ).raise_for_status()
    step("... while a payment webhook arrives (no browser, visitor ID from Stripe metadata)")
    requests.post(
        f"{SITE}/webhooks/payment/",
        timeout=10,
        json={"amount": 99, "currency": "USD", "metadata": {"supalytics_visitor_id": VISITOR}},
    ).raise_for_status()
    step("and the visitor cancels; the outage heals by itself")
    post(browser, "/cancel/", {}).raise_for_status()


def report() -> bool:
    from django_supalytics.models import OutboxEvent
    from django_supalytics.receiver.models import ReceivedEvent

    allowed = deadline_seconds()
    deadline = time.monotonic() + allowed
    while OutboxEvent.objects.exclude(status="sent").exists():
        if time.monotonic() > deadline:
            print(f"\n  Not every event was delivered within {allowed:.0f} s.")
            break
        time.sleep(0.5)
    received = {r.idempotency_key: r for r in ReceivedEvent.objects.all()}
    rows = []
    for event in OutboxEvent.objects.order_by("created_at", "id"):
        got = received.get(str(event.uuid))
        rows.append(
            (
                event.name,
                event.visitor_id or "-",
                event.status,
                str(event.attempts),
                "yes" if got else "NO",
                (got.visitor_id or "-") if got else "",
            )
        )
    header = ("tracked event", "visitor", "outbox", "attempts", "received", "received visitor")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    declined = OutboxEvent.objects.filter(name="subscription_downgraded").count()
    retries = sum(max(0, int(r[3]) - 1) for r in rows)
    ok = bool(rows) and all(r[4] == "yes" for r in rows) and len(received) == len(rows)
    print(
        f"\n  {len(rows)} tracked, {len(received)} received by the mock receiver, "
        f"{retries} retries through the outage; {declined} events from the declined change."
    )
    return ok and declined == 0


def main() -> int:
    if VAR.exists():
        shutil.rmtree(VAR)
    VAR.mkdir(parents=True)
    setup_django()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    print("django-supalytics demo")
    call_command("migrate", verbosity=0)
    get_user_model().objects.create_superuser("admin", "admin@example.com", "admin")
    env = {"TESTPROJECT_VAR_DIR": str(VAR), "SUPALYTICS_ENDPOINT": f"{SITE}/v1/events"}
    with Processes(env, VAR) as procs:
        step(f"started the site and mock receiver on {SITE}, a Celery worker and beat")
        procs.start("site", "manage.py", "supalytics_receiver", "--port", str(PORT))
        procs.celery(
            "worker", "--loglevel=INFO", "--concurrency=2", "--without-gossip", "--without-mingle"
        )
        procs.celery("beat", "--loglevel=INFO", "--schedule", str(VAR / "beat-schedule"))
        wait_for_port(PORT)
        scenario()
        ok = report()
    shown = VAR.relative_to(ROOT) if VAR.is_relative_to(ROOT) else VAR
    print(
        f"\n  Logs: {shown}/*.log. To browse these events in the admin: "
        f"TESTPROJECT_VAR_DIR={shown} make run, then open http://127.0.0.1:8000/admin/ "
        "(user admin, password admin)."
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
