"""Request-path cost of track(): against a bare INSERT of the same row, side by side.

    .venv/bin/python bench/track_cost.py [--rounds N]

Prints medians and the ratios (issue goals: single ≤ 1.3×, 100 in one transaction ≤ 1.2×), and
track() against an inline requests.post to a loopback receiver (what the vendor's examples do).
"""

from __future__ import annotations

import argparse
import os

from common import database_label, interleaved_medians, setup, throwaway_database

# The publisher a site uses: committed IDs handed to a background thread.
os.environ.setdefault("SUPALYTICS_ENQUEUE", "background")
setup()

from unittest import mock

import requests
from django.db import transaction

from django_supalytics import track
from django_supalytics.models import OutboxEvent

METADATA = {"plan": "pro", "amount": 29}


def bare_insert() -> None:
    with transaction.atomic():
        OutboxEvent.objects.create(
            name="subscription_created", visitor_id="abc123", metadata=METADATA
        )


def tracked() -> None:
    with transaction.atomic():
        track("subscription_created", visitor_id="abc123", metadata=METADATA)


def bare_insert_100() -> None:
    with transaction.atomic():
        for _ in range(100):
            OutboxEvent.objects.create(
                name="subscription_created", visitor_id="abc123", metadata=METADATA
            )


def tracked_100() -> None:
    with transaction.atomic():
        for _ in range(100):
            track("subscription_created", visitor_id="abc123", metadata=METADATA)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    with throwaway_database():
        from celery import current_app

        broker = current_app.conf.broker_url.split("@")[-1]
        print(f"database: {database_label()}; broker: {broker}")
        single = interleaved_medians({"insert": bare_insert, "track": tracked}, args.rounds)
        batch = interleaved_medians(
            {"insert": bare_insert_100, "track": tracked_100},
            max(3, args.rounds // 4),
            per_round=5,
            warmup=2,
        )
        inline = inline_post_median(args.rounds)
        from django_supalytics.dispatch import publisher

        publisher.flush()
        OutboxEvent.objects.all().delete()
        with current_app.connection_for_write() as connection:  # no worker: drop the messages
            connection.default_channel.queue_purge("celery")
    print(f"track() in a transaction       {single['track'] * 1e6:8.0f} µs")
    print(f"bare INSERT in a transaction   {single['insert'] * 1e6:8.0f} µs")
    print(f"  ratio                        {single['track'] / single['insert']:8.2f}×")
    print(f"100 track() in one transaction {batch['track'] * 1e3:8.1f} ms")
    print(f"100 bare INSERTs in one        {batch['insert'] * 1e3:8.1f} ms")
    print(f"  ratio                        {batch['track'] / batch['insert']:8.2f}×")
    print(f"inline requests.post           {inline * 1e6:8.0f} µs")
    print(f"  track() ÷ inline post        {single['track'] / inline:8.2f}×")


def inline_post_median(rounds: int) -> float:
    """What the vendor's example does in the request: POST to the API (here, loopback)."""
    import statistics
    import time

    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.servers.basehttp import WSGIRequestHandler  # noqa: F401

    from django_supalytics.receiver.server import ReceiverThread

    thread = ReceiverThread("127.0.0.1", StaticFilesHandler)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    url = f"http://127.0.0.1:{thread.port}/v1/events"
    session = requests.Session()
    samples = []
    with mock.patch("django_supalytics.receiver.conf.ReceiverSettings.RATE_LIMIT", 10**9):
        for _ in range(rounds * 10):
            start = time.perf_counter()
            session.post(
                url,
                json={"name": "subscription_created", "visitor_id": "abc123", "metadata": METADATA},
                headers={"Authorization": "Bearer sly_test_key"},
                timeout=10,
            )
            samples.append(time.perf_counter() - start)
    thread.terminate()
    return statistics.median(samples[10:])


if __name__ == "__main__":
    main()
