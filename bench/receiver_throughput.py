"""Requests per second that one mock receiver process sustains (accepted events, no limit).

    .venv/bin/python bench/receiver_throughput.py [--seconds 10] [--clients 2] [--threads 8]

The load comes from separate client processes, so the receiver's process has a core to itself
as far as a 2-core machine allows. Prints accepted events/s, and the same for 415 answers
(no database write) as the ceiling of the HTTP and Django layers alone.
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time
import uuid

from common import database_label, setup, throwaway_database

setup()

import requests

from tests.processes import free_port, start_receiver_process


def client(url: str, seconds: float, threads: int, body: bool, out: multiprocessing.Queue) -> None:
    counts = [0] * threads
    deadline = time.monotonic() + seconds

    def run(i: int) -> None:
        session = requests.Session()
        while time.monotonic() < deadline:
            headers = {"Authorization": "Bearer sly_test_key", "Idempotency-Key": uuid.uuid4().hex}
            if body:
                response = session.post(url, json={"name": "bench"}, headers=headers, timeout=10)
                ok = response.status_code == 200
            else:
                response = session.post(url, data="x", headers=headers, timeout=10)
                ok = response.status_code == 415
            counts[i] += ok

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put(sum(counts))


def measure(url: str, args: argparse.Namespace, body: bool) -> float:
    out: multiprocessing.Queue = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=client, args=(url, args.seconds, args.threads, body, out))
        for _ in range(args.clients)
    ]
    for p in procs:
        p.start()
    total = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    return total / args.seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with throwaway_database():
        port = free_port()
        receiver = start_receiver_process(port, SUPALYTICS_RECEIVER_RATE_LIMIT=str(10**9))
        url = f"http://127.0.0.1:{port}/v1/events"
        try:
            accepted = measure(url, args, body=True)
            refused = measure(url, args, body=False)
        finally:
            receiver.stop()
        print(
            f"database: {database_label()}; {args.clients} client processes × "
            f"{args.threads} threads, {args.seconds:g} s each"
        )
        print(
            f"one receiver process: {accepted:.0f} accepted events/s "
            f"(stored, idempotency-checked); {refused:.0f} requests/s answered 415"
        )


if __name__ == "__main__":
    main()
