"""``make test-install``: the package as a user installs it, with a real worker on a real broker.

Builds the wheel, installs it into a clean virtualenv with only user extras (no dev tools),
writes a minimal Django project, starts the standalone mock receiver and a Celery worker, tracks
events and checks that every one reaches the receiver. Runs once per broker:

    redis     pip install 'django-supalytics[redis,receiver]'; Redis broker and cache
    rabbitmq  pip install 'django-supalytics[receiver]';       RabbitMQ broker, no Redis at all
              (and there, a RedisCache without redis-py is supalytics.E025 in manage.py check)

Needs Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672, guest/guest); override with
SUPALYTICS_INSTALL_REDIS_URL / SUPALYTICS_INSTALL_AMQP_URL. Runs with a bare Python (the one
that runs this script), outside the dev virtualenv, so nothing the dev extra brings can hide a
missing dependency. Exit status 0 when every run delivered every event.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 20
KEY = "sly_test_install"
REDIS_URL = os.environ.get("SUPALYTICS_INSTALL_REDIS_URL", "redis://127.0.0.1:6379")
AMQP_URL = os.environ.get("SUPALYTICS_INSTALL_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
RUNS: dict[str, dict[str, str | None]] = {
    "redis": {"extras": "redis,receiver", "broker": f"{REDIS_URL}/3", "cache": f"{REDIS_URL}/4"},
    "rabbitmq": {"extras": "receiver", "broker": AMQP_URL, "cache": None},
}

SETTINGS = """\
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECRET_KEY = "install-check"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django_supalytics",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_supalytics.middleware.VisitorIdMiddleware",
]
DATABASES = {{
    "default": {{
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": HERE / "db.sqlite3",
        "OPTIONS": {{"transaction_mode": "IMMEDIATE", "timeout": 20}},
    }}
}}
CACHES = {caches}
USE_TZ = True
CELERY_BROKER_URL = {broker!r}
CELERY_BROKER_TRANSPORT_OPTIONS = {{"global_keyprefix": {prefix!r}}}
CELERY_TASK_DEFAULT_QUEUE = {queue!r}
SUPALYTICS = {{"API_KEY": {key!r}, "ENDPOINT": {endpoint!r}}}
SILENCED_SYSTEM_CHECKS = ["supalytics.W002"]
"""

CELERY_APP = """\
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "userproject.settings")
app = Celery("userproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
"""

TRACK = """\
import django
django.setup()
from django.db import transaction
from django_supalytics import track
with transaction.atomic():
    for i in range({events}):
        track("install_check", visitor_id=f"v{{i}}", metadata={{"i": i}})
with transaction.atomic():
    track("rolled_back")
    transaction.set_rollback(True)
print("tracked")
"""

DELETE_QUEUE = """\
from userproject.celery import app
with app.connection_for_write() as conn:
    conn.default_channel.queue_delete({queue!r})
"""


def say(text: str) -> None:
    print(f"[install] {text}", flush=True)


def run(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode:
        raise SystemExit(f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


def build_wheel(out: Path) -> Path:
    # From a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    source = out.parent / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".nox", ".var", "build", "dist", "*.egg-info"
        ),
    )
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", out, source)
    [wheel] = out.glob("django_supalytics-*.whl")
    return wheel


def received(db: Path) -> list[str]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM supalytics_receiver_receivedevent ORDER BY id"
                )
            ]
        except sqlite3.OperationalError:  # not migrated yet
            return []


def check_redis_cache_without_redis_py(python: Path, project: Path, env: dict[str, str]) -> None:
    """The README's RedisCache in an install without the [redis] extra: the system check
    says which extra is missing (supalytics.E025), before anything is tracked."""
    (project / "userproject" / "settings_rediscache.py").write_text(
        "from .settings import *  # noqa: F403\n"
        "CACHES = {'default': {'BACKEND': 'django.core.cache.backends.redis.RedisCache',"
        " 'LOCATION': 'redis://127.0.0.1:6379/9'}}\n"
    )
    done = subprocess.run(
        [str(python), "-m", "django", "check"],
        cwd=project,
        env={**env, "DJANGO_SETTINGS_MODULE": "userproject.settings_rediscache"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "supalytics.E025" in done.stderr, done.stderr
    assert 'pip install "django-supalytics[redis]"' in done.stderr, done.stderr
    say("no redis-py: manage.py check names the [redis] extra (supalytics.E025)")


def check(name: str, wheel: Path, work: Path) -> None:
    spec = RUNS[name]
    venv = work / "venv"
    say(f"{name}: clean virtualenv, pip install {wheel.name}[{spec['extras']}]")
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", f"{wheel}[{spec['extras']}]")
    installed = run(python, "-m", "pip", "list", "--format=freeze")
    for dev_tool in ("pytest", "mypy", "ruff", "hypothesis"):
        assert f"{dev_tool}==" not in installed.lower(), f"{dev_tool} is in a user's install"
    say(f"{name}: installed " + ", ".join(sorted(installed.split())))

    project = work / "project"
    package = project / "userproject"
    package.mkdir(parents=True)
    port = free_port()
    run_id = uuid.uuid4().hex[:8]
    queue = f"supalytics-install-{run_id}"
    cache = spec["cache"]
    caches = (
        {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": cache}}
        if cache
        else {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    )
    (package / "__init__.py").write_text("from .celery import app\n")
    (package / "celery.py").write_text(CELERY_APP)
    (package / "settings.py").write_text(
        SETTINGS.format(
            caches=repr(caches),
            broker=spec["broker"],
            prefix=f"install-{run_id}:",
            queue=queue,
            key=KEY,
            endpoint=f"http://127.0.0.1:{port}/v1/events",
        )
    )
    env = {
        "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
        "HOME": str(work),
        "PYTHONPATH": str(project),
        "DJANGO_SETTINGS_MODULE": "userproject.settings",
    }
    run(python, "-m", "django", "migrate", "--verbosity=0", cwd=project, env=env)
    run(python, "-m", "django", "check", "--fail-level=WARNING", cwd=project, env=env)
    if "redis" not in str(spec["extras"]).split(","):
        check_redis_cache_without_redis_py(python, project, env)

    receiver_db = work / "received.sqlite3"
    receiver_env = {k: v for k, v in env.items() if k != "DJANGO_SETTINGS_MODULE"}
    logs = {n: (work / f"{n}.log").open("wb") for n in ("receiver", "worker")}
    children: list[subprocess.Popen[bytes]] = []
    try:
        children.append(
            subprocess.Popen(
                [python, "-m", "django_supalytics.receiver", "--port", str(port), "--key", KEY,
                 "--db", str(receiver_db)],
                cwd=work, env=receiver_env, stdout=logs["receiver"],
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        )  # fmt: skip
        children.append(
            subprocess.Popen(
                [venv / "bin" / "celery", "-A", "userproject", "worker", "--concurrency=2",
                 "--loglevel=INFO", "--without-gossip", "--without-mingle"],
                cwd=project, env=env, stdout=logs["worker"], stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )  # fmt: skip

        def alive() -> bool:
            for child in children:
                if child.poll() is not None:
                    raise RuntimeError(f"{child.args!r} exited with {child.returncode}")
            return True

        def worker_ready() -> bool:
            return alive() and b"ready." in (work / "worker.log").read_bytes()

        wait_for("the worker starts", worker_ready, 60)
        broker = str(spec["broker"]).split("@")[-1]
        say(f"{name}: worker ready on {broker}, receiver on :{port}")
        run(python, "-c", TRACK.format(events=EVENTS), cwd=project, env=env)
        started = time.monotonic()
        wait_for(
            f"{EVENTS} events reach the receiver",
            lambda: alive() and len(received(receiver_db)) >= EVENTS,
            90,
        )
        time.sleep(1)  # would a stray or duplicate event still arrive?
        names = received(receiver_db)
        assert names == ["install_check"] * EVENTS, names
        took = time.monotonic() - started
        say(f"{name}: {len(names)} of {EVENTS} received in {took:.1f} s; none rolled back")
    except BaseException:
        for n in logs:
            logs[n].flush()
            tail = (work / f"{n}.log").read_text(errors="replace")[-4000:]
            print(f"--- {n}.log\n{tail}", file=sys.stderr)
        raise
    finally:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        for log in logs.values():
            log.close()
        # Leave no queue behind on the shared broker.
        subprocess.run([python, "-c", DELETE_QUEUE.format(queue=queue)], cwd=project, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("brokers", nargs="*", choices=[*RUNS, []], help="default: all")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="supalytics-install-"))
    try:
        wheel = build_wheel(work / "dist")
        say(f"built {wheel.name}")
        for name in args.brokers or list(RUNS):
            check(name, wheel, work / name)
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    say("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
