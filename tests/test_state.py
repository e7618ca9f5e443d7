"""The process's delivery state: one place, made anew on a setting change and after a fork."""

import os
import warnings

import pytest
from django.test import override_settings

from django_supalytics import state
from django_supalytics.backends import get_backend
from django_supalytics.outage import LocalCircuit
from django_supalytics.ratelimit import redis_for
from django_supalytics.waits import server_clock


def test_a_setting_change_makes_the_state_anew(settings):
    backend = get_backend()
    clock = server_clock("http://127.0.0.1:9/v1/events")
    LocalCircuit("k").report(ok=False, probe=False)
    assert state.current().circuits
    with override_settings(SUPALYTICS={**settings.SUPALYTICS, "DELIVERY_BACKEND": "locmem"}):
        assert type(get_backend()).__name__ == "LocmemBackend"
        assert not state.current().circuits
        assert server_clock("http://127.0.0.1:9/v1/events") is not clock
    assert get_backend() is not backend and type(get_backend()) is type(backend)


def test_a_cache_change_reaches_the_limiters_client(settings):
    first = redis_for("default")
    settings.CACHES = {**settings.CACHES}
    assert "default" not in state.current().redis_clients
    assert (redis_for("default") is None) == (first is None)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_with_its_own_state():
    parent = state.current()
    parent.circuits["k"] = {"fails": 1.0}
    read, write = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns that a process with threads forks; the child only writes and exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report whether it sees the parent's state, then leave at once
        child = state.current()
        os.write(write, b"fresh" if child is not parent and not child.circuits else b"shared")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 16) == b"fresh"
    assert state.current() is parent
