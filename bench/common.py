"""Shared set-up for benchmarks: Django on a throwaway database, median timing helpers.

PostgreSQL and Redis are used when they answer on localhost (as in the tests); the figures in
docs/benchmarks.md were measured that way.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()


@contextmanager
def throwaway_database() -> Iterator[None]:
    """A fresh test database for the run, dropped afterwards."""
    from django.conf import settings
    from django.test.utils import setup_databases, teardown_databases

    # Not the test suite's database name, so a benchmark can run beside the tests.
    database = settings.DATABASES["default"]
    database["TEST"] = {**database.get("TEST", {}), "NAME": f"supalytics_bench_{os.getpid()}"}
    config = setup_databases(verbosity=0, interactive=False)
    try:
        yield
    finally:
        teardown_databases(config, verbosity=0)


def interleaved_medians(
    fns: dict[str, Callable[[], object]], rounds: int, per_round: int = 50, warmup: int = 20
) -> dict[str, float]:
    """Median per call of each function, measured in alternating rounds so drift hits all."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(per_round):
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def database_label() -> str:
    from django.db import connection

    return f"{connection.vendor} ({connection.settings_dict['NAME']})"
