"""Freshness under a backfill (issue 19), black box, with the harness of ``test_faults``: real
Celery workers on the Redis broker, the mock receiver on a socket, PostgreSQL.

    SUPALYTICS_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/<yours> \\
        .venv/bin/pytest -m soak tests/test_freshness.py -s -p no:randomly
"""

from __future__ import annotations

import time

from django.core.management import call_command

from django_supalytics import track
from django_supalytics.models import OutboxEvent
from django_supalytics.receiver import stats
from django_supalytics.receiver.models import ReceivedEvent
from tests.processes import SOAK_MARKS
from tests.test_faults import (  # noqa: F401  (fleet: the fixture)
    BEAT_SWEEP,
    LIMIT,
    fleet,
    health_status,
    percentile,
    received_times,
    until,
)

pytestmark = SOAK_MARKS

ORDERS = 3000
LIVE_RATE = 10
LIVE_SECONDS = 20.0
#: Health's limit in this test: live events are late once they have waited this long.
MAX_LAG = 5


def test_a_backfill_does_not_hold_live_events(fleet, django_user_model):  # noqa: F811
    """3,000 existing orders backfilled with ``supalytics_backfill`` while two workers x 4
    deliver, and 10 live events a second for 20 s: live events arrive within 2 s of their
    commit (p95), and the two lanes together go at >= 0.9 of the API's limit. Health answers
    200 meanwhile (with a 5-s limit), and 503 once the workers are stopped and a live event has
    waited longer."""
    from testproject.shop.models import Subscription

    user = django_user_model.objects.create(username="backfilled")
    # Existing rows: bulk_create sends no signal, so no live event is tracked for them.
    Subscription.objects.bulk_create(
        Subscription(user=user, plan="pro", amount=29) for _ in range(ORDERS)
    )
    procs = fleet()
    procs.receiver()
    procs.workers_at_once(2, concurrency=4)
    load = procs.load(LIVE_RATE, LIVE_SECONDS, "live", sweep_every=BEAT_SWEEP)
    try:
        time.sleep(1.0)  # live events are flowing when the backfill commits
        began = time.time()
        call_command("supalytics_backfill", "shop.Subscription", "--event", "order_existing")
        backfilled = time.time() - began
        time.sleep(MAX_LAG + 1)  # in the middle of the backfill, with the workers delivering
        during = health_status(MAX_LAG)
        committed_at = load.committed_at(timeout=LIVE_SECONDS + 60)
        total = ORDERS + len(committed_at)
        arrived = until(lambda: ReceivedEvent.objects.count() >= total, 120)
    finally:
        load.stop.touch()
    # The workers stopped: a live event overdue by more than the limit turns health 503.
    for worker in list(procs.workers):
        procs.stop_worker(worker)
    track("late")
    time.sleep(MAX_LAG + 1)
    stopped = health_status(MAX_LAG)
    times = received_times()
    lags = [times[key] - at for key, at in committed_at.items() if key in times]
    bulk = set(
        map(str, OutboxEvent.objects.filter(name="order_existing").values_list("uuid", flat=True))
    )
    first = min(times[key] for key in bulk if key in times)
    last = max(times.values())
    window = sum(1 for t in times.values() if first <= t <= last)
    rate = window / (last - first)
    print(
        f"\nbackfill-vs-live: {ORDERS} backfilled ({backfilled:.1f} s to commit), "
        f"{len(committed_at)} live at {LIVE_RATE}/s; live commit->receipt p50 "
        f"{percentile(lags, 0.5):.2f} s, p95 {percentile(lags, 0.95):.2f} s, max "
        f"{max(lags):.2f} s; both lanes {window} stored in {last - first:.1f} s = {rate:.1f}/s "
        f"({rate / LIMIT:.2f} of the limit); answers {stats.read()}; health {during} during "
        f"the backfill, {stopped} with the workers stopped"
    )
    assert arrived, "not everything arrived within 120 s"
    assert set(committed_at) <= set(times) and bulk <= set(times)
    assert percentile(lags, 0.95) <= 2.0
    assert rate >= 0.9 * LIMIT
    assert (during, stopped) == (200, 503)
