"""The database retry layer (``queryset.retrying``), against real dropped connections."""

import contextlib
import threading
import time

import pytest
from django.db import OperationalError, connection, transaction

from django_supalytics import queryset, track
from django_supalytics.models import OutboxEvent


def _terminate_my_connection() -> None:
    """Another session terminates this one's backend, as an operator or a failover would."""
    import psycopg

    pid = connection.connection.info.backend_pid
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        dbname=settings["NAME"],
        autocommit=True,
    ) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_statement_on_a_terminated_connection_runs_again_on_a_new_one():
    event = track("e")
    connection.ensure_connection()
    _terminate_my_connection()
    rows = OutboxEvent.objects.filter(pk=event.pk)
    assert queryset.retrying("default", lambda: rows.update(attempts=3)) == 1
    assert OutboxEvent.objects.get(pk=event.pk).attempts == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_claim_survives_connections_dropped_while_it_runs():
    for i in range(20):
        track(f"e{i}")
    stop = threading.Event()

    def killer():
        while not stop.is_set():
            with contextlib.suppress(Exception):  # the connection may be gone already
                _terminate_my_connection()
            time.sleep(0.01)

    claimed = []
    try:
        for _ in range(20):
            connection.ensure_connection()
            thread = threading.Thread(target=killer)
            stop.clear()
            thread.start()
            claimed += queryset.retrying("default", lambda: OutboxEvent.objects.claim(1))
            stop.set()
            thread.join()
    finally:
        stop.set()
    assert len({e.pk for e in claimed}) == len(claimed)


@pytest.mark.django_db
def test_inside_a_transaction_nothing_is_retried():
    calls = []

    def fails():
        calls.append(1)
        raise OperationalError("server closed the connection unexpectedly")

    with transaction.atomic(), pytest.raises(OperationalError):
        queryset.retrying("default", fails)
    assert calls == [1]


@pytest.mark.django_db(transaction=True)
def test_a_database_that_stays_down_raises_after_the_retry_window():
    calls = []

    def fails():
        calls.append(time.monotonic())
        raise OperationalError("could not connect to server")

    started = time.monotonic()
    with pytest.raises(OperationalError):
        queryset.retrying("default", fails, seconds=0.5)
    assert len(calls) > 1 and time.monotonic() - started < 1.5


@pytest.mark.django_db(transaction=True)
def test_other_errors_are_not_retried():
    calls = []

    def bug():
        calls.append(1)
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        queryset.retrying("default", bug)
    assert calls == [1]
