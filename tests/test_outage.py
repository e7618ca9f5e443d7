"""The circuit breaker every worker of one API key shares, in Redis and per process."""

import time

import pytest

from django_supalytics import outage, state

BASE = 0.2


@pytest.fixture(params=["redis", "local"])
def circuit(request, settings, monkeypatch):
    monkeypatch.setattr(outage, "THRESHOLD", 3)
    monkeypatch.setattr(outage, "PROBE_BASE", BASE)
    settings.SUPALYTICS = {**settings.SUPALYTICS, "OUTAGE_PROBE_MAX": 4 * BASE}
    if request.param == "redis":
        if "redis" not in settings.CACHES["default"]["BACKEND"].lower():
            pytest.skip("needs Redis")
    else:
        settings.SUPALYTICS = {**settings.SUPALYTICS, "CACHE_ALIAS": "local"}
        state.reset()
    made = outage.get_circuit(f"sly_outage_{time.time_ns()}")
    assert isinstance(
        made, outage.RedisCircuit if request.param == "redis" else outage.LocalCircuit
    )
    return made


def fail(circuit, times):
    return [circuit.report(ok=False, probe=False) for _ in range(times)]


def test_isolated_failures_leave_it_closed(circuit):
    assert fail(circuit, 2) == [0.0, 0.0]
    circuit.report(ok=True, probe=False)  # an answer: the count starts again
    assert fail(circuit, 2) == [0.0, 0.0]
    assert circuit.admit() == outage.CLOSED


def test_failures_in_a_row_open_it_for_everyone(circuit):
    assert fail(circuit, 3)[-1] == BASE
    admission = circuit.admit()
    assert not admission.allowed and 0 < admission.delay <= BASE
    # Late answers of requests already in flight: part of the outage (no attempt spent), and
    # they neither count nor open it for longer.
    late = fail(circuit, 5)
    assert all(0 < seconds <= BASE for seconds in late)
    time.sleep(BASE + 0.05)
    assert circuit.admit().probe


def test_one_probe_at_a_time_and_a_growing_interval(circuit):
    fail(circuit, 3)
    time.sleep(BASE + 0.05)
    probe = circuit.admit()
    assert probe.allowed and probe.probe
    assert not circuit.admit().allowed  # the others wait for the probe's answer
    assert circuit.report(ok=False, probe=True) == 2 * BASE
    time.sleep(2 * BASE + 0.05)
    assert circuit.admit().probe
    assert circuit.report(ok=False, probe=True) == 4 * BASE
    time.sleep(4 * BASE + 0.05)
    assert circuit.admit().probe
    assert circuit.report(ok=False, probe=True) == 4 * BASE  # capped at OUTAGE_PROBE_MAX


def test_the_probe_interval_never_exceeds_outage_probe_max(circuit, settings):
    """A small OUTAGE_PROBE_MAX bounds the first wait too: the backlog goes within it."""
    settings.SUPALYTICS = {**settings.SUPALYTICS, "OUTAGE_PROBE_MAX": BASE / 2}
    assert fail(circuit, 3)[-1] == BASE / 2


def test_a_probe_that_succeeds_closes_it(circuit):
    fail(circuit, 3)
    time.sleep(BASE + 0.05)
    assert circuit.admit().probe
    assert circuit.report(ok=True, probe=True) == 0.0
    assert circuit.admit() == outage.CLOSED
    assert fail(circuit, 2) == [0.0, 0.0]  # the count starts from zero again
