"""Delivery under database, deploy and outage faults (issue 18, "What it must show"), black box.

Real processes only: Celery workers (prefork) on the Redis broker, the mock receiver on a
socket, PostgreSQL. Every figure is read from what the receiver stored and counted (its
``ReceivedEvent`` rows with ``received_at``, its answer counts in Redis: ``stats.read()``, which
counts ``replayed`` for an ``Idempotency-Key`` already accepted), from the outbox rows, and from
the workers' INFO logs (one ``Task ...deliver_...[id] received`` line per broker message a worker
took). Each test prints its figures on one line (``pytest -s``).

    SUPALYTICS_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/<yours> \\
        .venv/bin/pytest tests/test_faults.py -s -p no:randomly
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

from django_supalytics import track
from django_supalytics.models import OutboxEvent
from django_supalytics.receiver import faults, stats
from django_supalytics.receiver.models import ReceivedEvent
from django_supalytics.tasks import sweep_outbox
from tests.processes import (
    SOAK_MARKS,
    ChildProcess,
    free_port,
    start_receiver_process,
    wait_for,
    worker_process,
)

pytestmark = SOAK_MARKS

#: libpq reads PGAPPNAME: the workers' connections carry this name in pg_stat_activity, so the
#: database-fault test terminates theirs and no other (not the test's, nor the receiver's).
WORKER_APP = "supalytics-fault-worker"
#: The receiver's limit (requests per second per key); the client's RATE_LIMIT default is 98.
LIMIT = 100
#: Beat's schedule for sweep_outbox in the README.
BEAT_SWEEP = 30.0
#: A worker SIGTERMed is SIGKILLed this long after, as ``docker stop`` does.
STOP_GRACE = 10.0
#: One line per broker message a worker takes (a message with a countdown is taken at once and
#: waits in the worker; a task's own retry is a new message, and counts): every task of the
#: package (deliver_event, deliver_events today; the sweeper is called directly, not sent).
TASK_RECEIVED = re.compile(r"Task django_supalytics\.[\w.]+\[[^]]+\] received")


# --- processes ----------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (a prefork worker's pool), children first found first."""
    found: list[int] = []
    todo = [pid]
    for _ in range(1000):  # bounded: a process tree of this project is a handful
        if not todo:
            break
        parent = todo.pop()
        out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True)
        children = [int(p) for p in out.stdout.split()]
        found += children
        todo += children
    return found


def kill_tree(process: ChildProcess, tree: list[int] | None = None) -> None:
    """SIGKILL a process and everything under it (what ``docker stop`` does after its grace);
    ``tree``: processes found under it earlier (a pool its main process left behind)."""
    if process.proc is None:
        return
    alive = process.proc.poll() is None
    pids = [*(tree or []), *(descendants(process.proc.pid) if alive else [])]
    if alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.proc.pid, signal.SIGKILL)
    for pid in pids:
        if ours(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.proc.wait(timeout=10)


def ours(pid: int) -> bool:
    """Whether ``pid`` is still a process of this project (not a reused ID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"celery" in cmdline or b"tests." in cmdline or b"manage.py" in cmdline


class Fleet:
    """The processes one test starts; ``close()`` ends every one of them, whatever happened."""

    def __init__(self, run_dir: Path, env: dict[str, str]) -> None:
        self.run_dir = run_dir
        self.env = env
        self.all: list[ChildProcess] = []
        self.workers: list[ChildProcess] = []
        self.url = ""

    def receiver(self) -> str:
        port = free_port()
        self.all.append(start_receiver_process(port, **self.env))
        self.url = f"http://127.0.0.1:{port}/v1/events"
        return self.url

    def worker(self, concurrency: int = 4, standby: bool = False) -> ChildProcess:
        """A new worker (its connections named ``WORKER_APP``), once it says it is ready;
        ``standby``: consuming from a queue nobody sends to, until ``activate()``."""
        queue = f"supalytics-standby-{time.time_ns()}" if standby else None
        worker = worker_process(
            self.url, concurrency=concurrency, queues=queue, **{**self.env, "PGAPPNAME": WORKER_APP}
        )
        self.all.append(worker)  # before it is ready, so that close() reaches it
        worker.start(lambda: "ready." in worker.output())
        if not standby:
            self.workers.append(worker)
        return worker

    def activate(self, worker: ChildProcess) -> None:
        """A standby worker starts consuming the delivery queue (Celery remote control)."""
        from django_supalytics.conf import conf
        from testproject.celery import app

        name = worker.argv[worker.argv.index("-n") + 1].replace("%h", socket.gethostname())
        queue = getattr(conf, "TASK_QUEUE", None) or app.conf.task_default_queue
        replies = app.control.add_consumer(queue, destination=[name], reply=True, timeout=10)
        assert replies, f"{name} did not answer add_consumer"
        wait_for(lambda: f"Started consuming from {queue}" in worker.output(), timeout=30)
        self.workers.append(worker)

    def workers_at_once(
        self, count: int, concurrency: int = 4, standby: bool = False
    ) -> list[ChildProcess]:
        with ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(self.worker, concurrency, standby) for _ in range(count)]
            return [future.result() for future in futures]

    def load(self, rate: float, seconds: float, name: str, sweep_every: float) -> Load:
        """Steady tracking (``tests.soak_load``: one event per transaction, none rolled back)
        at ``rate`` for ``seconds``, shared by ``LOAD_PROCESSES`` processes (one process fell
        to ~28/s of 50 on a loaded 2-core machine); the first also sweeps every
        ``sweep_every`` s, until ``Load.stop`` exists."""
        load = Load(self.run_dir / f"stop-{time.time_ns()}")
        for i in range(LOAD_PROCESSES):
            out = self.run_dir / f"load-{time.time_ns()}.json"
            args = {
                "--events": int(rate * seconds / LOAD_PROCESSES),
                "--rate": rate / LOAD_PROCESSES,
                "--per-transaction": 1,
                "--rollback-every": 0,
                "--sweep-every": sweep_every if i == 0 else 0,
                "--name": name,
                "--out": out,
                "--stop-file": load.stop,
            }
            process = ChildProcess(
                ["-m", "tests.soak_load", *(str(x) for kv in args.items() for x in kv)],
                env=self.env,
            )
            self.all.append(process)
            process.start(lambda: True)
            load.outs.append(out)
        return load

    def stop_worker(self, worker: ChildProcess, grace: float = STOP_GRACE) -> tuple[float, bool]:
        """SIGTERM ``worker``; SIGKILL it (and its pool) if it is still there ``grace`` s later.
        Returns the seconds it took to leave, and whether it left on its own."""
        assert worker.proc is not None
        self.workers.remove(worker)
        pool = descendants(worker.proc.pid)
        began = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        try:
            worker.proc.wait(timeout=grace)
            left = True
        except subprocess.TimeoutExpired:
            left = False
        took = time.monotonic() - began
        kill_tree(worker, pool)
        worker.stop()
        return took, left

    def broker_messages(self) -> int:
        return sum(len(TASK_RECEIVED.findall(p.output())) for p in self.all if "celery" in p.argv)

    def close(self) -> None:
        pools = {
            id(p): descendants(p.proc.pid)
            for p in self.all
            if p.proc is not None and p.proc.poll() is None
        }
        for process in self.all:
            if process.proc is not None and process.proc.poll() is None:
                process.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.all:
            if process.proc is None:
                process.stop()
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            kill_tree(process, pools.get(id(process)))
            process.stop()


#: Processes that share a steady load.
LOAD_PROCESSES = 2


class Load:
    def __init__(self, stop: Path) -> None:
        self.stop = stop
        self.outs: list[Path] = []

    def committed_at(self, timeout: float) -> dict[str, float]:
        """Once every load process has tracked its share: UUID → Unix time of its commit."""
        wait_for(lambda: all(out.exists() for out in self.outs), timeout=timeout, interval=0.5)
        merged: dict[str, float] = {}
        for out in self.outs:
            merged.update(json.loads(out.read_text())["committed_at"])
        return merged


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def make(**overrides: Any) -> Fleet:
        env = {
            "SUPALYTICS_TEST_OVERRIDES": json.dumps(overrides),
            # Processes hand IDs over on commit as a site does: the background publisher.
            "SUPALYTICS_ENQUEUE": "background",
        }
        made.append(Fleet(tmp_path, env))
        return made[-1]

    faults.reset(received=True)
    yield make
    for one in made:
        one.close()
    faults.reset(received=True)


# --- measurements -------------------------------------------------------------------------


def track_backlog(count: int, name: str, per_transaction: int = 50) -> list[str]:
    """``count`` committed rows, tracked by the test process (their messages go to the broker
    on commit, before any worker runs)."""
    keys: list[str] = []
    for start in range(0, count, per_transaction):
        with transaction.atomic():
            for i in range(start, min(count, start + per_transaction)):
                keys.append(str(track(name, metadata={"i": i}).uuid))
    return keys


def received_keys() -> list[str]:
    return list(ReceivedEvent.objects.values_list("idempotency_key", flat=True))


def received_times() -> dict[str, float]:
    return {
        key: at.timestamp()
        for key, at in ReceivedEvent.objects.values_list("idempotency_key", "received_at")
    }


def requests_answered() -> int:
    """Requests the receiver answered so far, whatever it answered."""
    return sum(v for k, v in stats.read().items() if k.isdigit())


def outbox_statuses() -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in OutboxEvent.objects.values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def until(
    done: Callable[[], bool], timeout: float, every: Callable[[], None] | None = None
) -> bool:
    """Poll ``done`` for up to ``timeout`` s, calling ``every`` between polls; whether it came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return True
        if every is not None:
            every()
        time.sleep(0.25)
    return done()


class Sweeper:
    """``sweep_outbox()`` every ``interval`` s from the test process, as beat would."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next = time.monotonic() + interval
        self.runs = 0

    def __call__(self) -> None:
        if time.monotonic() >= self.next:
            sweep_outbox()
            self.runs += 1
            self.next = time.monotonic() + self.interval


def settle(sweeper: Sweeper, timeout: float) -> dict[str, int]:
    """Once everything has arrived: give answered rows (and the sweeper, for expired leases)
    ``timeout`` s to end ``sent``; the outbox's statuses then."""
    until(lambda: set(outbox_statuses()) <= {"sent"}, timeout, sweeper)
    return outbox_statuses()


def health_status(max_lag: float) -> int:
    """What ``django_supalytics.urls``' ``health/`` answers now, with ``HEALTH_MAX_LAG``
    ``max_lag`` (the test process reads the same outbox as the workers)."""
    from django.conf import settings
    from django.test import Client, override_settings

    with override_settings(SUPALYTICS={**settings.SUPALYTICS, "HEALTH_MAX_LAG": max_lag}):
        return Client().get("/supalytics/health/").status_code


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


# --- 1. database faults -------------------------------------------------------------------

DB_KILL_EVERY = 1.5
DB_KILL_FOR = 20.0
DB_LEASE = 10.0


class ConnectionKiller(threading.Thread):
    """On a connection of its own: terminate every connection of the workers (named
    ``WORKER_APP``) to the test database every ``every`` s, for ``seconds`` s."""

    def __init__(self, every: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.every, self.seconds = every, seconds
        self.terminated: list[int] = []
        self.error: BaseException | None = None
        self.finished_at = 0.0
        self.halt = threading.Event()

    def run(self) -> None:
        import psycopg

        db = connection.settings_dict
        try:
            with psycopg.connect(
                dbname=str(db["NAME"]),
                user=db.get("USER") or None,
                password=db.get("PASSWORD") or None,
                host=db.get("HOST") or None,
                port=str(db.get("PORT") or "") or None,
                application_name="supalytics-fault-killer",
                autocommit=True,
            ) as conn:
                end = time.monotonic() + self.seconds
                while time.monotonic() < end and not self.halt.is_set():
                    row = conn.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = %s AND application_name = %s "
                        "AND pid <> pg_backend_pid()",
                        (str(db["NAME"]), WORKER_APP),
                    ).fetchone()
                    self.terminated.append(int(row[0]) if row else 0)
                    self.halt.wait(self.every)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.finished_at = time.monotonic()


def test_database_faults(fleet):
    """1,500 committed rows, two workers x 4, every worker connection terminated every 1.5 s
    for 20 s: 0 lost, 0 rows answered 2xx POSTed again, 0 left ``sending`` or ``failed``."""
    entered = time.monotonic()
    procs = fleet(LEASE_SECONDS=DB_LEASE)
    procs.receiver()
    keys = track_backlog(1500, "db_fault")
    began = time.monotonic()
    tracking = began - entered
    procs.workers_at_once(2, concurrency=4)
    stored_at_start = ReceivedEvent.objects.count()
    killer = ConnectionKiller(DB_KILL_EVERY, DB_KILL_FOR)
    killer.start()
    sweeper = Sweeper(2.0)
    try:
        arrived = until(lambda: ReceivedEvent.objects.count() >= len(keys), 240, sweeper)
        arrived_after = time.monotonic() - began
        killer.join(timeout=DB_KILL_FOR + 10)
        statuses_on_arrival = outbox_statuses()
        # Answered rows end recorded; an orphaned lease runs out and the sweeper takes it.
        statuses = settle(sweeper, DB_LEASE + 15)
    finally:
        killer.halt.set()
        killer.join(timeout=10)
    received = received_keys()
    answered = stats.read()
    replays = answered.get("replayed", 0)
    print(
        f"\ndb-faults: {len(keys)} tracked, {len(set(received) & set(keys))} stored "
        f"({stored_at_start} before the first kill), {replays} replays, "
        f"{statuses.get('sending', 0)} sending, {statuses.get('failed', 0)} failed "
        f"(on arrival: {statuses_on_arrival.get('sending', 0)} sending); "
        f"{sum(killer.terminated)} connections terminated in {len(killer.terminated)} rounds; "
        f"answers {answered}; all arrived {arrived_after:.1f} s after the workers started; "
        f"backlog tracked in {tracking:.1f} s; {time.monotonic() - entered:.0f} s in all"
    )
    assert killer.error is None, killer.error
    assert sum(killer.terminated) > 0  # the faults happened (PGAPPNAME reached the workers)
    assert arrived, "not everything arrived within 240 s"
    assert set(received) == set(keys)  # none lost
    assert len(received) == len(set(received))
    assert replays == 0  # no row the API had answered 2xx was POSTed again
    assert statuses.get("sending", 0) == 0
    assert statuses.get("failed", 0) == 0


# --- 2. rolling deploy --------------------------------------------------------------------

DEPLOY_RATE = 40
DEPLOY_SECONDS = 60
DEPLOY_LEASE = 10.0


def test_rolling_deploy(fleet):
    """1,500 committed rows, then 40/s for 60 s, while 5 workers are replaced one at a time
    (three while the backlog drains): each leaves within 10 s of SIGTERM, 0 lost, 0 re-POSTs;
    once the backlog is gone, commit → receipt p99 ≤ 5 s and slowest ≤ 20 s.

    A replacement: a new worker starts consuming, the oldest gets SIGTERM, and SIGKILL (with
    its pool) if it is still there 10 s later; the next one follows once it has gone."""
    procs = fleet(LEASE_SECONDS=DEPLOY_LEASE)
    procs.receiver()
    # The five new workers boot now, idle (on a queue nobody sends to), and each starts
    # consuming in its turn: a boot during the drain took 28-38 s on a loaded 2-core machine,
    # longer than the backlog lasts, and what is tested is how the old ones leave.
    standby = procs.workers_at_once(5, concurrency=4, standby=True)
    backlog = track_backlog(1500, "deploy_backlog")
    procs.workers_at_once(2, concurrency=4)
    load = procs.load(DEPLOY_RATE, DEPLOY_SECONDS, "deploy_steady", sweep_every=2)
    began, began_wall = time.monotonic(), time.time()
    # Replacements 1-3 back to back from 2 s on (the backlog drains for ~25 s at best:
    # 1,500 / (98 - 40) per s), 4 and 5 later in the steady tracking.
    schedule = [2.0, 0.0, 0.0, 35.0, 50.0]
    replacements: list[dict[str, Any]] = []
    try:
        for at in schedule:
            time.sleep(max(0.0, began + at - time.monotonic()))
            started = time.monotonic()
            procs.activate(standby.pop(0))
            start_took = time.monotonic() - started
            left = ReceivedEvent.objects.filter(name="deploy_backlog").count() < len(backlog)
            took, on_its_own = procs.stop_worker(procs.workers[0])
            replacements.append(
                {
                    "at": started - began,
                    "start": start_took,
                    "exit": took,
                    "on_its_own": on_its_own,
                    "backlog_left": left,
                }
            )
        committed_at = load.committed_at(timeout=DEPLOY_SECONDS + 120)
        everything = set(backlog) | set(committed_at)
        arrived = until(lambda: ReceivedEvent.objects.count() >= len(everything), 180)
        statuses = settle(Sweeper(3600), DEPLOY_LEASE + 15)  # the load process sweeps
    finally:
        load.stop.touch()
    received = received_keys()
    times = received_times()
    answered = stats.read()
    replays = answered.get("replayed", 0)
    backlog_gone = max((times[k] for k in backlog if k in times), default=float("inf"))
    starts = ", ".join(f"{r['start']:.1f}" for r in replacements)
    commits = sorted(committed_at.values())
    steady_rate = (len(commits) - 1) / (commits[-1] - commits[0]) if len(commits) > 1 else 0.0
    lags = [times[k] - at for k, at in committed_at.items() if at > backlog_gone and k in times]
    p99 = percentile(lags, 0.99) if lags else float("nan")
    slowest = max(lags) if lags else float("nan")
    exit_list = ", ".join(f"{r['exit']:.1f}" for r in replacements)
    during_backlog = sum(1 for r in replacements if r["backlog_left"])
    print(
        f"\ndeploy: {len(everything)} tracked, {len(set(received) & everything)} stored, "
        f"{replays} replays; worker exits {exit_list} s "
        f"({sum(not r['on_its_own'] for r in replacements)} SIGKILLed), "
        f"{during_backlog} replaced while the backlog drained, new ones consuming after "
        f"{starts} s; backlog gone {backlog_gone - began_wall:.1f} s after the load began "
        f"(tracked at {steady_rate:.1f}/s measured); after it, "
        f"{len(lags)} events: commit → receipt p99 {p99:.2f} s, "
        f"slowest {slowest:.2f} s; {statuses}"
    )
    assert arrived, "not everything arrived within 180 s of the load's end"
    assert everything <= set(received)  # none lost
    assert len(received) == len(set(received))
    assert all(r["on_its_own"] and r["exit"] <= STOP_GRACE for r in replacements), replacements
    assert replays == 0
    assert statuses.get("sending", 0) == 0 and statuses.get("failed", 0) == 0
    assert len(lags) >= 100, "the backlog was not gone long before the tracking ended"
    assert p99 <= 5.0
    assert slowest <= 20.0
    # The harness's own premise (not the product's): the deploy overlapped the backlog.
    assert during_backlog >= 3, "harness: fewer than 3 workers were replaced during the backlog"


# --- 3. a long outage ---------------------------------------------------------------------

LONG_OUTAGE = 150.0
LONG_OUTAGE_EVENTS = 40


def test_long_outage(fleet):
    """40 events tracked during a 150-s outage (503 to everything), compressed in time:
    0 failed, no row with more than 3 attempts, at most ~1 request/s while down, all
    delivered within 20 s of the heal."""
    procs = fleet(BACKOFF_BASE=0.5, BACKOFF_MAX=4, MAX_ATTEMPTS=6, OUTAGE_PROBE_MAX=2)
    procs.receiver()
    procs.workers_at_once(2, concurrency=4)
    before = requests_answered()
    faults.inject(503, seconds=LONG_OUTAGE)
    heal = time.time() + LONG_OUTAGE
    began = time.monotonic()
    sweeper = Sweeper(BEAT_SWEEP)
    keys: list[str] = []
    failed_during = 0
    # One event every 3 s over the first 120 s of the outage, each in its own transaction.
    for i in range(LONG_OUTAGE_EVENTS):
        time.sleep(max(0.0, began + 1 + 3 * i - time.monotonic()))
        with transaction.atomic():
            keys.append(str(track("outage_event", metadata={"i": i}).uuid))
        sweeper()
    while time.time() < heal:
        time.sleep(min(0.25, max(0.0, heal - time.time())))
        sweeper()
    time.sleep(0.05)
    during = requests_answered() - before
    failed_during = OutboxEvent.objects.filter(status="failed").count()
    answered_down = stats.read()
    arrived = until(lambda: ReceivedEvent.objects.count() >= len(keys), 60, sweeper)
    times = received_times()
    last = max(times.get(k, float("inf")) for k in keys)  # inf: not all of them arrived
    attempts = list(OutboxEvent.objects.values_list("attempts", flat=True))
    statuses = outbox_statuses()
    print(
        f"\nlong-outage: {len(keys)} tracked in a {LONG_OUTAGE:.0f}-s outage, "
        f"{len(set(times) & set(keys))} stored, {during} requests while down "
        f"({during / LONG_OUTAGE:.2f}/s; {answered_down}), "
        f"{failed_during} failed at the heal, {statuses.get('failed', 0)} at the end, "
        f"attempts max {max(attempts, default=0)} (rows over 3: "
        f"{sum(1 for a in attempts if a > 3)}), "
        + (f"all delivered {last - heal:.1f} s after the heal" if arrived else "not all delivered")
    )
    assert arrived, "not everything arrived within 60 s of the heal"
    assert failed_during == 0 and statuses.get("failed", 0) == 0
    assert max(attempts) <= 3
    assert during <= 1.0 * LONG_OUTAGE  # at most ~1 request/s while down
    assert last - heal <= 20.0


# --- 4. draining after an outage ----------------------------------------------------------

STEADY_RATE = 50
BEFORE_OUTAGE = 10.0
OUTAGE = 40.0
AFTER_OUTAGE = 30.0


def test_drain_after_outage(fleet):
    """Steady tracking at 50/s, a 40-s outage, two workers x 4: the backlog starts within 5 s of
    the heal and drains faster than events are tracked (≥ 60/s; 91 to 93/s measured on this
    2-core machine, where the workers, the receiver and PostgreSQL share the cores:
    docs/benchmarks.md), ≤ 5 requests/s while down, ≤ 1.5 broker messages per event."""
    procs = fleet()
    procs.receiver()
    procs.workers_at_once(2, concurrency=4)
    seconds = BEFORE_OUTAGE + OUTAGE + AFTER_OUTAGE
    load = procs.load(STEADY_RATE, seconds, "steady", sweep_every=BEAT_SWEEP)
    began = time.monotonic()
    try:
        time.sleep(max(0.0, began + BEFORE_OUTAGE - time.monotonic()))
        before = requests_answered()
        faults.inject(503, seconds=OUTAGE)
        down = time.time()
        heal = down + OUTAGE
        time.sleep(max(0.0, heal - 1 - time.time()))
        # Every live event committed during the outage is held for the next probe (its own
        # message, then the wake-ups), so none has been due for long.
        health_down = health_status(max_lag=20)
        time.sleep(max(0.0, heal - time.time()) + 0.05)
        during = requests_answered() - before
        committed_at = load.committed_at(timeout=seconds + 120)
        arrived = until(lambda: ReceivedEvent.objects.count() >= len(committed_at), 180)
    finally:
        load.stop.touch()
    times = received_times()
    backlog = [k for k, at in committed_at.items() if at < heal]
    gone = max((times.get(k, float("inf")) for k in backlog), default=float("inf"))
    first = min((t for t in times.values() if t >= heal), default=float("inf"))
    drained = sum(1 for t in times.values() if heal <= t <= gone)
    rate = drained / (gone - heal) if gone > heal else 0.0
    tracked_down = sum(1 for at in committed_at.values() if down <= at < heal) / OUTAGE
    messages = procs.broker_messages()
    per_event = messages / max(1, len(committed_at))
    answered = {k: v for k, v in stats.read().items() if k.isdigit()}
    print(
        f"\ndrain-after-outage: {len(committed_at)} tracked at {STEADY_RATE}/s "
        f"({tracked_down:.1f}/s measured while down), "
        f"{len(set(times) & set(committed_at))} stored; {during} requests in the "
        f"{OUTAGE:.0f}-s outage ({during / OUTAGE:.2f}/s); first stored "
        f"{first - heal:.1f} s after the heal, backlog of {len(backlog)} gone "
        f"{gone - heal:.1f} s after it: {rate:.1f} stored/s from the heal; "
        f"{messages} broker messages = {per_event:.2f} per event; answers {answered}; "
        f"health {health_down} (HEALTH_MAX_LAG 20) a second before the heal"
    )
    assert arrived, "not everything arrived within 180 s of the tracking's end"
    assert set(committed_at) <= set(times)
    assert messages > 0, "harness: no task message found in the workers' logs"
    assert during <= 5 * OUTAGE
    # The backlog starts going within seconds of the heal (a probe every OUTAGE_PROBE_MAX, 2 s),
    # not after its rows' backoff, and goes faster than events are tracked.
    assert first - heal <= 5.0
    assert rate >= 1.2 * STEADY_RATE
    assert per_event <= 1.5
    # Rows held for the circuit's next probe are not due: health stays 200 through the outage.
    assert health_down == 200
