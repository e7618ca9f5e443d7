"""``make demo``'s flow, as a new user runs it: embedded defaults, no services."""

import os
import subprocess
import sys

import pytest

from tests.processes import ROOT, free_port

pytestmark = pytest.mark.slow


def test_demo_delivers_every_tracked_event(tmp_path):
    # A user's shell: none of the test run's service URLs or settings.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SUPALYTICS_", "DJANGO_", "CELERY_"))
        and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(TESTPROJECT_VAR_DIR=str(tmp_path / "demo"), DEMO_PORT=str(free_port()))
    demo = subprocess.run(
        [sys.executable, "-m", "testproject.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    logs = "".join(
        f"\n--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted((tmp_path / "demo").glob("*.log"))
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr + logs
    assert "5 tracked, 5 received by the mock receiver" in demo.stdout
    assert "0 events from the declined change" in demo.stdout
    assert "database is locked" not in logs
