"""Fault soak: about 2,000 events tracked over 70 s while workers are killed, the broker stops,
and the API rate-limits, answers slowly (past the lease), is down for 30 s, then drops
connections. Nothing may be lost, sent for a rolled-back transaction, stored twice, or left
``sending``; a request repeating an ``Idempotency-Key`` already answered 2xx can only come from
a worker killed with answers in flight.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from django_supalytics.models import OutboxEvent
from django_supalytics.receiver import faults, stats
from django_supalytics.receiver.models import ReceivedEvent
from tests.processes import (
    SOAK_MARKS,
    ChildProcess,
    free_port,
    start_receiver_process,
    start_worker_process,
    wait_for,
)

REDIS_SERVER = shutil.which("redis-server")
pytestmark = SOAK_MARKS
# Short leases and sweeps so that recovery fits in the test's time.
OVERRIDES = json.dumps(
    {
        "LEASE_SECONDS": 5,
        "SWEEP_GRACE": 3,
        "MAX_ATTEMPTS": 50,
        "BACKOFF_MAX": 4,
        "OUTAGE_PROBE_MAX": 4,
        "SEND_CONCURRENCY": 4,
        "ENQUEUE": "background",
    }
)
#: Answers a killed worker may have had in flight (and so never recorded): one batch's worth
#: of concurrent requests per SIGKILL.
KILLS = 2
IN_FLIGHT = 4


class Broker:
    """A Redis server of its own, used only as this test's Celery broker."""

    def __init__(self, run_dir):
        self.port = free_port()
        self.run_dir = run_dir
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen(
            [
                str(REDIS_SERVER),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.run_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda: (
                subprocess.run(
                    ["redis-cli", "-p", str(self.port), "ping"], capture_output=True
                ).stdout.strip()
                == b"PONG"
            ),
            timeout=10,
        )

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def kill(worker: ChildProcess) -> None:
    """SIGKILL the worker and its pool children at once, as the OOM killer would."""
    assert worker.proc is not None
    children = subprocess.run(
        ["pgrep", "-P", str(worker.proc.pid)], capture_output=True, text=True
    ).stdout.split()
    for pid in [worker.proc.pid, *map(int, children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    worker.proc.wait()
    worker.stop()


@pytest.mark.skipif(
    REDIS_SERVER is None and os.environ.get("SUPALYTICS_REQUIRE_SERVICES") != "1",
    reason="needs the redis-server binary",
)
def test_fault_soak(tmp_path, processes):
    broker = Broker(tmp_path)
    broker.start()
    env = {"SUPALYTICS_TEST_OVERRIDES": OVERRIDES, "SUPALYTICS_TEST_BROKER_URL": broker.url}
    port = free_port()
    processes.append(start_receiver_process(port, **env))
    url = f"http://127.0.0.1:{port}/v1/events"
    faults.reset(received=True)

    def worker():
        processes.append(start_worker_process(url, concurrency=2, **env))
        return processes[-1]

    current = worker()
    out, stop_file = tmp_path / "load.json", tmp_path / "stop"
    load = ChildProcess(
        [
            "-m",
            "tests.soak_load",
            "--events",
            "2100",
            "--rate",
            "30",
            "--out",
            str(out),
            "--stop-file",
            str(stop_file),
        ],
        env=env,
    )
    processes.append(load.start(lambda: True))
    begin = time.monotonic()

    def at(second):
        time.sleep(max(0.0, begin + second - time.monotonic()))

    try:
        at(4)
        kill(current)  # 1st SIGKILL, mid-send
        current = worker()
        at(7)
        broker.stop()  # the broker is gone for 10 s
        at(17)
        broker.start()
        at(19)
        # The API rate-limits the next requests, whenever they come: a worker can still be
        # reconnecting to the broker here, so a 4-s window could pass with no request in it.
        faults.inject(429, count=8)
        at(23)
        kill(current)  # 2nd SIGKILL
        current = worker()
        at(26)
        faults.inject(delay=6.0, seconds=5)  # ... answers past the 5-s lease ...
        at(32)
        faults.inject(503, seconds=30)  # ... is down for 30 s, while tracking goes on ...
        at(63)
        faults.inject(drop=True, seconds=4)  # ... then drops connections
        wait_for(out.exists, timeout=180)
        load_result = json.loads(out.read_text())
        committed = set(load_result["committed"])
        wait_for(
            lambda: OutboxEvent.objects.filter(status="sent").count() >= len(committed),
            timeout=240,
            interval=1,
        )
    finally:
        stop_file.touch()
        broker.stop()
    received = list(ReceivedEvent.objects.values_list("idempotency_key", flat=True))
    answered = stats.read()
    print(
        f"soak: {len(committed)} committed, {len(load_result['rolled_back'])} rolled back, "
        f"{len(received)} stored; answers {answered}; took {time.monotonic() - begin:.0f}s"
    )
    assert set(received) == committed  # none lost, none rolled back
    assert len(received) == len(set(received))  # none stored twice
    assert not OutboxEvent.objects.filter(status="sending").exists()
    assert not OutboxEvent.objects.exclude(status="sent").exists()
    assert answered.get("503", 0) > 0 and answered.get("429", 0) > 0  # the faults happened
    # The 30-s outage cost few requests: the circuit opened, then one probe at a time.
    assert answered.get("503", 0) < 60
    assert answered.get("replayed", 0) <= KILLS * IN_FLIGHT
