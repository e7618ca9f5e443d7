"""The outbox at production size: do the queries that run stay flat as sent rows pile up?

    .venv/bin/python bench/outbox_size.py [--sizes 0 1000000 10000000] [--rounds 15]

PostgreSQL only. The retained history (``sent`` rows, 1 to 8 days old) is filled by one
``INSERT ... SELECT generate_series`` statement per size, with the indexes dropped and built
again after it, then ``VACUUM ANALYZE``; the live part is the same at every size: 1,000 due
``pending`` rows in the live lane and 1,000 in the bulk lane (a backfill), 200 not yet due, 50
``sending`` under a live lease, 20 under an expired one, 100 ``failed``, and 10,000 rows sent
in the last 24 hours (a site's recent figures grow with its rate, not with its retention).
Each query is timed (median of ``--rounds``) at every size and printed with its ratio to the
empty history:

- claim: ``OutboxEvent.objects.claim(50)`` with both lanes due, rolled back;
- sweep: the ``sweep_outbox`` task with publishing mocked away, rolled back;
- status: ``manage.py supalytics_status --json``;
- admin: the outbox changelist page, fetched by a logged-in superuser through the test client;
- health: ``GET /supalytics/health/`` through the test client (the probe's two queries);
- metrics: ``GET /supalytics/metrics/`` as a logged-in superuser (a Prometheus scrape);
- insert: 100 ``pending`` rows in one transaction (what every index costs a write).

Then the write cost of the index set against the one before migration 0002, side by side in
the same process: two copies of the table, one with each set, written alternately (100 INSERTs
in a transaction; then the same rows through ``sending`` to ``sent``, as delivery does).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import StringIO

from common import setup, throwaway_database

setup()

from unittest import mock

from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client

from django_supalytics.models import OutboxEvent

TABLE = OutboxEvent._meta.db_table
COLUMNS = (
    "uuid, name, visitor_id, metadata, status, attempts, next_attempt_at, lease_owner, "
    "lease_expires_at, last_status_code, last_error, created_at, sent_at, failed_at, priority"
)


def fill(count: int, *, status: str, start: str, span: str, **extra: str) -> None:
    """``count`` rows of ``status`` created evenly from ``now() - start`` over ``span``."""
    if count <= 0:
        return
    values = {
        "attempts": "1",
        "next_attempt_at": "t",
        "lease_owner": "NULL",
        "lease_expires_at": "NULL",
        "last_status_code": "200",
        "last_error": "''",
        "created_at": "t",
        "sent_at": "t + interval '1 second'",
        "failed_at": "NULL",
        "priority": "0",
        **extra,
    }
    select = ", ".join(
        [
            "gen_random_uuid()",
            "(ARRAY['signup','login','page_view','subscription_created'])[1 + i %% 4]",
            "md5(i::text)",
            """'{"plan": "pro"}'::jsonb""",
            f"'{status}'",
            *(values[c] for c in COLUMNS.split(", ")[5:]),
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} ({COLUMNS}) SELECT {select} FROM generate_series(1, %s) AS i, "
            f"LATERAL (SELECT now() - interval '{start}' + (i::float8 / %s) * interval '{span}' "
            "AS t) AS ts",
            [count, count],
        )


def fill_live() -> None:
    fill(10_000, status="sent", start="24 hours", span="23 hours")
    fill(1_000, status="pending", start="10 minutes", span="9 minutes", sent_at="NULL")
    fill(
        1_000,
        status="pending",
        start="30 minutes",
        span="29 minutes",
        sent_at="NULL",
        priority="1",
    )
    fill(
        200,
        status="pending",
        start="10 minutes",
        span="9 minutes",
        sent_at="NULL",
        next_attempt_at="now() + interval '1 hour'",
        last_status_code="500",
        last_error="'boom'",
    )
    fill(
        50,
        status="sending",
        start="1 minute",
        span="30 seconds",
        sent_at="NULL",
        lease_owner="gen_random_uuid()",
        lease_expires_at="now() + interval '1 hour'",
    )
    fill(
        20,
        status="sending",
        start="1 hour",
        span="30 seconds",
        sent_at="NULL",
        lease_owner="gen_random_uuid()",
        lease_expires_at="now() - interval '50 minutes'",
    )
    fill(
        100,
        status="failed",
        start="2 days",
        span="1 day",
        sent_at="NULL",
        failed_at="t + interval '1 hour'",
        last_status_code="400",
        last_error="'invalid_name'",
    )


@contextmanager
def indexes_dropped() -> Iterator[None]:
    """Drop every index but the primary key, and build them again afterwards: a bulk fill, then
    one sorted build per index, is many times faster than millions of random index inserts."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'u'",
            [TABLE],
        )
        constraints = cursor.fetchall()
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s "
            "AND indexname NOT LIKE '%%_pkey'",
            [TABLE],
        )
        indexes = [row for row in cursor.fetchall() if row[0] not in dict(constraints)]
        for name, _ in constraints:
            cursor.execute(f'ALTER TABLE {TABLE} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET maintenance_work_mem = '512MB'")
            for _, definition in indexes:
                cursor.execute(definition)
            for name, definition in constraints:
                cursor.execute(f'ALTER TABLE {TABLE} ADD CONSTRAINT "{name}" {definition}')


def vacuum() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {TABLE}")


#: The indexes of migration 0001 (13 with PostgreSQL's LIKE twins), besides the primary key.
OLD_INDEXES = [
    "CREATE UNIQUE INDEX {t}_uuid ON {t} (uuid)",
    "CREATE INDEX {t}_name ON {t} (name)",
    "CREATE INDEX {t}_name_like ON {t} (name varchar_pattern_ops)",
    "CREATE INDEX {t}_visitor ON {t} (visitor_id)",
    "CREATE INDEX {t}_visitor_like ON {t} (visitor_id varchar_pattern_ops)",
    "CREATE INDEX {t}_status ON {t} (status)",
    "CREATE INDEX {t}_status_like ON {t} (status varchar_pattern_ops)",
    "CREATE INDEX {t}_user ON {t} (user_id)",
    "CREATE INDEX {t}_created ON {t} (created_at)",
    "CREATE INDEX {t}_due ON {t} (status, next_attempt_at)",
    "CREATE INDEX {t}_lease ON {t} (status, lease_expires_at)",
    "CREATE INDEX {t}_sent ON {t} (status, sent_at)",
]


def write_cost(rounds: int) -> dict[str, float]:
    """Median ms of 100 INSERTs, and of taking them through sending to sent, per index set."""
    tables = {"old": "bench_old_indexes", "new": "bench_new_indexes"}
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {tables['new']} (LIKE {TABLE} INCLUDING ALL)"
        )  # the current set: copies every index of the table
        cursor.execute(
            f"CREATE TABLE {tables['old']} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING IDENTITY "
            "INCLUDING CONSTRAINTS)"
        )
        cursor.execute(f"ALTER TABLE {tables['old']} ADD PRIMARY KEY (id)")
        for statement in OLD_INDEXES:
            cursor.execute(statement.format(t=tables["old"]))
    insert = (
        "INSERT INTO {t} (uuid, name, visitor_id, metadata, status, attempts, next_attempt_at, "
        "last_error, created_at, priority) VALUES (gen_random_uuid(), 'signup', "
        """md5(random()::text), '{{"plan": "pro"}}', 'pending', 0, now(), '', now(), 0) """
        "RETURNING id"
    )

    def writes(table: str) -> Callable[[], None]:
        def run() -> None:
            with transaction.atomic(), connection.cursor() as cursor:
                ids = []
                for _ in range(100):
                    cursor.execute(insert.format(t=table))
                    ids.append(cursor.fetchone()[0])
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} SET status = 'sending', lease_expires_at = now() "
                    "WHERE id = ANY(%s)",
                    [ids],
                )
                cursor.execute(
                    f"UPDATE {table} SET status = 'sent', sent_at = now(), "
                    "lease_expires_at = NULL WHERE id = ANY(%s)",
                    [ids],
                )

        return run

    fns = {name: writes(table) for name, table in tables.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for name in fns:
        fns[name]()  # warm-up
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    with connection.cursor() as cursor:
        for table in tables.values():
            cursor.execute(f"DROP TABLE {table}")
    return {name: statistics.median(values) for name, values in samples.items()}


def median(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def rolled_back(fn: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        with transaction.atomic():
            fn()
            transaction.set_rollback(True)

    return run


def insert_100() -> None:
    with transaction.atomic():
        for i in range(100):
            OutboxEvent.objects.create(name="bench_insert", visitor_id=f"v{i}", metadata={"i": i})
        transaction.set_rollback(True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 1_000_000, 10_000_000])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    from django.contrib.auth import get_user_model

    from django_supalytics import tasks

    with throwaway_database():
        assert connection.vendor == "postgresql", "this benchmark needs PostgreSQL"
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = %s ORDER BY 1", [TABLE]
            )
            indexes = [row[0] for row in cursor.fetchall()]
        print(f"{len(indexes)} indexes on {TABLE}: {', '.join(indexes)}")
        admin = get_user_model().objects.create_superuser("bench", "b@example.com", "x")
        client = Client()
        client.force_login(admin)
        url = f"/admin/django_supalytics/{OutboxEvent._meta.model_name}/"

        def changelist() -> None:
            response = client.get(url)
            assert response.status_code == 200, response.status_code

        anonymous = Client()

        def health() -> None:
            # 503 here: the fixed live part has expired leases 50 minutes old.
            response = anonymous.get("/supalytics/health/")
            assert response.status_code in (200, 503), response.status_code

        def scrape() -> None:
            response = client.get("/supalytics/metrics/")
            assert response.status_code == 200, response.status_code

        def sweep() -> None:
            with mock.patch("django_supalytics.tasks.publish", return_value=True):
                tasks.sweep_outbox()

        queries: dict[str, Callable[[], object]] = {
            "claim 50": rolled_back(lambda: OutboxEvent.objects.claim(50)),
            "sweep": rolled_back(sweep),
            "supalytics_status": lambda: call_command(
                "supalytics_status", "--json", stdout=StringIO()
            ),
            "admin changelist": changelist,
            "health": health,
            "metrics scrape": scrape,
            "insert 100 rows": insert_100,
        }
        fill_live()
        filled = 0
        results: dict[int, dict[str, float]] = {}
        for size in sorted(args.sizes):
            start = time.perf_counter()
            with indexes_dropped():
                fill(size - filled, status="sent", start="8 days", span="7 days")
            filled = size
            vacuum()
            print(f"history of {size:,} sent rows: filled in {time.perf_counter() - start:.0f} s")
            results[size] = {name: median(fn, args.rounds) for name, fn in queries.items()}
            for name, value in results[size].items():
                print(f"  {name:<18} {value * 1e3:9.2f} ms")
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {TABLE}")
        write = write_cost(max(30, args.rounds * 3))

    sizes = sorted(results)
    base = sizes[0]
    header = " | ".join(f"{s:,} rows" for s in sizes)
    print(f"\n| query | {header} | ratio at {sizes[-1]:,} |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for name in queries:
        cells = " | ".join(f"{results[s][name] * 1e3:.2f} ms" for s in sizes)
        ratio = results[sizes[-1]][name] / results[base][name]
        print(f"| {name} | {cells} | {ratio:.2f}× |")
    print(
        "\n100 INSERTs in a transaction, then UPDATEs to sending and to sent (medians): "
        f"indexes before 0002 {write['old'] * 1e3:.1f} ms, now {write['new'] * 1e3:.1f} ms "
        f"({write['new'] / write['old']:.2f}×)"
    )


if __name__ == "__main__":
    main()
