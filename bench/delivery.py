"""Delivery at the API's rate limit: efficiency, raw capacity and lag, with real processes.

    .venv/bin/python bench/delivery.py efficiency --events 3000 --workers 2
    .venv/bin/python bench/delivery.py capacity --events 3000 --workers 2 --receivers 2
    .venv/bin/python bench/delivery.py capacity --events 6000 --workers 2 --sink
    .venv/bin/python bench/delivery.py lag --rate 50 --seconds 20 --workers 2
    .venv/bin/python bench/delivery.py recovery --events 3000 --outage 120 --workers 2
    .venv/bin/python bench/delivery.py wan --events 1500 --workers 2 --rtt 0.04 --jitter 0.01 \
        --clock-offset -0.3

Needs PostgreSQL and Redis on localhost (the tests' defaults). Starts a Celery worker with
``--concurrency=N`` and mock receiver processes (``manage.py supalytics_receiver``), all on a
throwaway database, and reads the receiver's own counts of what it answered.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
import urllib.request
from datetime import datetime

from common import database_label, setup, throwaway_database

os.environ.setdefault("SUPALYTICS_ENQUEUE", "background")
setup()

from django.conf import settings
from django.db import transaction

from django_supalytics import track
from django_supalytics.conf import conf
from django_supalytics.dispatch import publisher
from django_supalytics.models import OutboxEvent
from django_supalytics.receiver import faults, stats
from django_supalytics.receiver.models import ReceivedEvent
from django_supalytics.tasks import sweep_outbox
from tests.processes import (
    ChildProcess,
    free_port,
    start_receiver_process,
    start_server_process,
    start_worker_process,
)

LIMIT = 100


def start(
    workers: int, receivers: int, unlimited: bool, overrides: str = "{}"
) -> tuple[list[ChildProcess], str]:
    port = free_port()
    env = {"SUPALYTICS_RECEIVER_RATE_LIMIT": str(10**9 if unlimited else LIMIT)}
    if unlimited:
        env["SUPALYTICS_RATE_LIMIT"] = str(10**9)
    procs = [start_receiver_process(port, "--reuse-port", **env) for _ in range(receivers)]
    url = f"http://127.0.0.1:{port}/v1/events"
    procs.append(
        start_worker_process(url, concurrency=workers, SUPALYTICS_TEST_OVERRIDES=overrides, **env)
    )
    return procs, url


def track_many(count: int, per_transaction: int = 50) -> list[str]:
    keys = []
    for start in range(0, count, per_transaction):
        with transaction.atomic():
            for i in range(start, min(count, start + per_transaction)):
                keys.append(str(track("bench_event", metadata={"i": i}).uuid))
    publisher.flush(30)
    return keys


def wait_received(count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while ReceivedEvent.objects.count() < count and time.monotonic() < deadline:
        time.sleep(0.5)


def delivered_rate() -> tuple[int, float]:
    times = sorted(ReceivedEvent.objects.values_list("received_at", flat=True))
    span = (times[-1] - times[0]).total_seconds() if len(times) > 1 else 0.0
    return len(times), (len(times) - 1) / span if span else 0.0


def report_integrity(keys: list[str]) -> dict[str, int]:
    received = list(ReceivedEvent.objects.values_list("idempotency_key", flat=True))
    answered = stats.read()
    requests = sum(int(v) for k, v in answered.items() if k.isdigit())
    return {
        "requests": requests,
        "429": int(answered.get("429", 0)),
        "lost": len(set(keys) - set(received)),
        "stored_twice": len(received) - len(set(received)),
        "sent_twice (replayed)": int(answered.get("replayed", 0)),
        "stuck_sending": OutboxEvent.objects.filter(status="sending").count(),
    }


def print_delivery(count: int, rate: float, figures: dict[str, int]) -> None:
    print(f"  delivered {count} at {rate:.1f} events/s = {rate / LIMIT:.3f} of the limit")
    print(
        f"  {figures['429']} answered 429 of {figures['requests']} requests "
        f"({100 * figures['429'] / max(1, figures['requests']):.2f}%)"
    )
    print(
        f"  lost {figures['lost']}, stored twice {figures['stored_twice']}, "
        f"sent twice {figures['sent_twice (replayed)']}, stuck sending {figures['stuck_sending']}"
    )


def reset() -> None:
    OutboxEvent.objects.all().delete()
    ReceivedEvent.objects.all().delete()
    faults.reset(received=True)


def run(
    workers: int,
    receivers: int,
    unlimited: bool,
    events: int,
    backlog_first: bool,
    overrides: str = "{}",
) -> tuple[list[str], int, float, dict[str, int]]:
    """Track ``events`` (before or after starting the processes) and wait for all of them."""
    keys = track_many(events) if backlog_first else []
    procs, _ = start(workers, receivers, unlimited, overrides)
    try:
        keys = keys or track_many(events)
        wait_received(events, timeout=events / 20 + 60)
    finally:
        for proc in procs:
            proc.stop()
    count, rate = delivered_rate()
    return keys, count, rate, report_integrity(keys)


def efficiency(args: argparse.Namespace) -> None:
    _, count, rate, figures = run(args.workers, 1, False, args.events, backlog_first=False)
    print(
        f"efficiency, {args.workers} worker processes, {args.events} events, "
        f"receiver limit {LIMIT}/s, client RATE_LIMIT {conf.RATE_LIMIT:g}/s"
    )
    print_delivery(count, rate, figures)


def capacity(args: argparse.Namespace) -> None:
    for overrides in args.worker_settings or ["{}"]:
        reset()
        capacity_run(args, overrides)


def capacity_run(args: argparse.Namespace, overrides: str) -> None:
    if args.sink:
        count, rate, figures = sink_run(args, overrides)
        against = "bench/sink.py (a receiver that does nothing)"
    else:
        _, count, rate, figures = run(
            args.workers, args.receivers, True, args.events, True, overrides
        )
        against = f"{args.receivers} mock receiver processes"
    print(
        f"raw capacity, {args.workers} worker processes, {against}, limits out of the way, "
        f"{args.events} events, worker settings {overrides}"
    )
    print(f"  delivered {count} at {rate:.1f} events/s = {rate / LIMIT:.2f} × 100/s")
    print(f"  lost {figures['lost']}, stored twice {figures['stored_twice']}")


def sink_run(args: argparse.Namespace, overrides: str) -> tuple[int, float, dict[str, int]]:
    """A backlog sent to ``bench/sink.py``: what the senders can do when answers cost nothing."""
    keys = track_many(args.events)
    port = free_port()
    procs = [start_server_process(["bench/sink.py", "--port", str(port)], port)]
    received: list[tuple[str, float]] = []
    try:
        procs.append(
            start_worker_process(
                f"http://127.0.0.1:{port}/v1/events",
                concurrency=args.workers,
                SUPALYTICS_RATE_LIMIT=str(10**9),
                SUPALYTICS_TEST_OVERRIDES=overrides,
            )
        )
        deadline = time.monotonic() + args.events / 20 + 60
        while len(received) < args.events and time.monotonic() < deadline:
            time.sleep(0.5)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/keys") as answer:
                received = json.load(answer)
    finally:
        for proc in procs:
            proc.stop()
    times = sorted(t for _, t in received)
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    sent = [key for key, _ in received]
    figures = {"lost": len(set(keys) - set(sent)), "stored_twice": len(sent) - len(set(sent))}
    return len(set(sent)), rate, figures


def lag(args: argparse.Namespace) -> None:
    procs, _ = start(args.workers, 1, unlimited=False)
    committed: dict[str, float] = {}
    try:
        interval = 1 / args.rate
        next_at = time.monotonic()
        for i in range(int(args.rate * args.seconds)):
            with transaction.atomic():
                event = track("lag_probe", metadata={"i": i})
            committed[str(event.uuid)] = time.time()
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        wait_received(len(committed), timeout=60)
    finally:
        for proc in procs:
            proc.stop()
    lags = sorted(
        received_at.timestamp() - committed[key]
        for key, received_at in ReceivedEvent.objects.values_list("idempotency_key", "received_at")
        if key in committed
    )
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    print(
        f"lag at {args.rate} events/s for {args.seconds}s ({len(lags)} events), "
        f"{args.workers} worker processes"
    )
    print(
        f"  commit → stored by the receiver: median {statistics.median(lags) * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms"
    )


TASK_RECEIVED = re.compile(r"Task django_supalytics\.tasks\.deliver_events?\[[^]]+\] received")
TASK_RAN = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/[^]]+\] "
    r"Task django_supalytics\.tasks\.deliver_events?\[[^]]+\] succeeded",
    re.MULTILINE,
)


def messages(worker: ChildProcess) -> int:
    """Delivery messages the worker has taken from the broker so far (its INFO log)."""
    return len(TASK_RECEIVED.findall(worker.output()))


def messages_run_since(worker: ChildProcess, since: float) -> int:
    """Delivery messages whose task finished at or after ``since`` (Unix time; the log's
    times are local): those that did the work, whenever they reached the worker (a message
    with a countdown reaches it at once and waits there)."""
    return sum(
        1
        for stamp in TASK_RAN.findall(worker.output())
        if datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() >= since
    )


def recovery(args: argparse.Namespace) -> None:
    """A backlog tracked while the API is down (503) drains once it answers again."""
    procs, _ = start(args.workers, 1, unlimited=False)
    worker = procs[-1]
    try:
        faults.inject(503, seconds=args.outage)
        healed = time.time() + args.outage
        keys = track_many(args.events)
        # Beat's default schedule: a sweep every 30 s, throughout.
        next_sweep = time.monotonic() + 30
        while time.time() < healed:
            time.sleep(0.2)
            if time.monotonic() >= next_sweep:
                sweep_outbox()
                next_sweep += 30
        outage_stats = stats.read()
        deadline = time.monotonic() + args.events / 20 + 120
        while ReceivedEvent.objects.count() < args.events and time.monotonic() < deadline:
            time.sleep(0.2)
            if time.monotonic() >= next_sweep:
                sweep_outbox()
                next_sweep += 30
        during = messages_run_since(worker, healed)
        total_messages = messages(worker)
    finally:
        for proc in procs:
            proc.stop()
    times = sorted(ReceivedEvent.objects.values_list("received_at", flat=True))
    figures = report_integrity(keys)
    attempts = sorted(OutboxEvent.objects.values_list("attempts", flat=True))
    print(
        f"recovery, {args.workers} worker processes, {args.events} events tracked during a "
        f"{args.outage:g}-s outage (503), receiver limit {LIMIT}/s"
    )
    print(
        f"  during the outage: {outage_stats.get('503', 0)} requests answered 503; "
        f"attempts per row after delivery: max {attempts[-1]}, "
        f"{sum(1 for a in attempts if a > 1)} rows with more than one"
    )
    if len(times) > 1:
        first, last = times[0].timestamp(), times[-1].timestamp()
        print(
            f"  first event stored {first - healed:.1f} s after the API healed; "
            f"{len(times)} stored by {last - healed:.1f} s"
        )
        print(
            f"  drain from the heal: {len(times) / (last - healed):.1f} events/s = "
            f"{len(times) / (last - healed) / LIMIT:.3f} of the limit; from the first "
            f"answer: {(len(times) - 1) / (last - first) / LIMIT:.3f}"
        )
    print(
        f"  broker messages whose task ran from the heal to the end: {during} = "
        f"{during / max(1, len(times)):.3f} per delivered event; taken over the whole "
        f"run {total_messages} = {total_messages / max(1, len(times)):.3f}"
    )
    print(
        f"  lost {figures['lost']}, stored twice {figures['stored_twice']}, "
        f"{figures['429']} answered 429, stuck sending {figures['stuck_sending']}"
    )


def wan(args: argparse.Namespace) -> None:
    """A backlog sent through a proxy that adds a round trip, jitter, to a receiver whose
    clock is offset from the workers'; once per ``--worker-settings``."""
    for overrides in args.worker_settings or ["{}"]:
        reset()
        wan_run(args, overrides)


def wan_run(args: argparse.Namespace, overrides: str) -> None:
    keys = track_many(args.events)
    port, proxy_port = free_port(), free_port()
    env = {
        "SUPALYTICS_RECEIVER_RATE_LIMIT": str(LIMIT),
        "SUPALYTICS_RECEIVER_CLOCK_OFFSET": str(args.clock_offset),
    }
    procs = [start_receiver_process(port, **env)]
    try:
        proxy = [
            "-m",
            "tests.wanproxy",
            "--port",
            str(proxy_port),
            "--target",
            f"127.0.0.1:{port}",
            "--rtt",
            str(args.rtt),
            "--jitter",
            str(args.jitter),
        ]
        procs.append(start_server_process(proxy, proxy_port))
        url = f"http://127.0.0.1:{proxy_port}/v1/events"
        procs.append(
            start_worker_process(url, concurrency=args.workers, SUPALYTICS_TEST_OVERRIDES=overrides)
        )
        wait_received(args.events, timeout=args.events / 20 + 60)
    finally:
        for proc in procs:
            proc.stop()
    count, rate = delivered_rate()
    figures = report_integrity(keys)
    stored = ReceivedEvent.objects.values_list("received_at", flat=True)
    times = sorted(t.timestamp() for t in stored)
    per_second: dict[int, int] = {}
    for t in times:
        per_second[int(t - times[0])] = per_second.get(int(t - times[0]), 0) + 1
    print(
        f"wan, {args.workers} worker processes, {args.events} events backlogged, "
        f"round trip {args.rtt * 1000:.0f} ms ± {args.jitter * 1000:.0f} ms each way, receiver "
        f"clock {args.clock_offset:+g} s, receiver limit {LIMIT}/s, "
        f"client RATE_LIMIT {conf.RATE_LIMIT:g}/s, worker settings {overrides}"
    )
    print_delivery(count, rate, figures)
    print(f"  stored per second from the first: {list(per_second.values())}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["efficiency", "capacity", "lag", "recovery", "wan"])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--receivers", type=int, default=2)
    parser.add_argument("--sink", action="store_true", help="capacity: to bench/sink.py")
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--outage", type=float, default=120, help="recovery: seconds of 503")
    parser.add_argument("--rtt", type=float, default=0.04, help="wan: round trip, seconds")
    parser.add_argument("--jitter", type=float, default=0.01, help="wan: ± seconds each way")
    parser.add_argument("--clock-offset", type=float, default=-0.3, help="wan: receiver clock")
    parser.add_argument(
        "--worker-settings",
        action="append",
        help="wan, capacity: SUPALYTICS overrides for the worker, as JSON; one run per option",
    )
    args = parser.parse_args()
    if "redis" not in settings.CACHES["default"]["BACKEND"].lower():
        sys.exit("this benchmark needs Redis on localhost (a shared limiter and broker)")
    with throwaway_database():
        print(f"database: {database_label()}")
        reset()
        modes = {
            "efficiency": efficiency,
            "capacity": capacity,
            "lag": lag,
            "recovery": recovery,
            "wan": wan,
        }
        modes[args.what](args)
        reset()


if __name__ == "__main__":
    main()
