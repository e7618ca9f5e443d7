"""The testing helpers in tests that never commit: the way users write them."""

import pytest
from django.db import transaction
from django.test import TestCase

from django_supalytics import track
from django_supalytics.backends import get_backend, locmem
from django_supalytics.backends.celery import CeleryBackend
from django_supalytics.backends.locmem import LocmemBackend
from django_supalytics.testing import SupalyticsTestMixin, capture_events


@pytest.mark.django_db
def test_events_are_seen_in_a_test_that_never_commits():
    with capture_events() as events:
        track("kept", metadata={"plan": "pro"})
    events.assert_tracked("kept", count=1, metadata__plan="pro")
    assert [e.name for e in events] == ["kept"]
    assert len(events) == 1 and events[0].name == "kept"


@pytest.mark.django_db
def test_a_rolled_back_savepoint_drops_its_events():
    with capture_events() as events:
        track("before")
        with pytest.raises(RuntimeError), transaction.atomic():
            track("rolled_back")
            raise RuntimeError
        track("after")
    assert [e.name for e in events] == ["before", "after"]
    events.assert_not_tracked("rolled_back")


def test_the_fixture_asks_for_the_database_itself(supalytics_events):
    track("no_marker_needed")
    supalytics_events.assert_tracked("no_marker_needed")


@pytest.mark.django_db(transaction=True)
def test_capturing_hands_events_to_the_locmem_backend_only():
    locmem.outbox.clear()
    with capture_events():
        assert isinstance(get_backend(), LocmemBackend)
        with transaction.atomic():
            event = track("captured")
    assert [h.event_ids for h in locmem.outbox] == [(event.pk,)]
    assert isinstance(get_backend(), CeleryBackend)  # the project's again


def test_the_fixture_hands_events_to_the_locmem_backend(supalytics_events, settings):
    """Even when the test changes SUPALYTICS itself, through pytest-django's ``settings``."""
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENQUEUE": "inline"}
    assert isinstance(get_backend(), LocmemBackend)


class MixinInATestCase(SupalyticsTestMixin, TestCase):
    def test_without_capturing_on_commit_callbacks(self):
        self.client.post("/webhooks/payment/", {"amount": 1}, content_type="application/json")
        self.assertTracked("payment_succeeded", metadata__amount=1)
        self.assertNotTracked("refunded")


# The pytest plugin's hermetic default, in a project of its own (pytester, a subprocess).
HERMETIC_SETTINGS = """
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_supalytics"]
SECRET_KEY = "hermetic"
USE_TZ = True
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
SUPALYTICS = {"API_KEY": "sly_hermetic", "ENQUEUE": "inline"}
"""

HERMETIC_TESTS = """
import pytest
from django.db import transaction

from django_supalytics import track
from django_supalytics.backends import get_backend, locmem


@pytest.mark.django_db(transaction=True)
def test_default_is_locmem():
    assert type(get_backend()).__name__ == "LocmemBackend"
    with transaction.atomic():
        event = track("committed")
    assert locmem.outbox == [locmem.HandOver((event.pk,))]


@pytest.mark.supalytics_delivery
def test_marked_keeps_the_projects_backend():
    assert type(get_backend()).__name__ == "CeleryBackend"


def test_settings_changes_keep_locmem(settings):
    assert locmem.outbox == []  # cleared before each test
    settings.SUPALYTICS = {**settings.SUPALYTICS, "ENQUEUE": "background"}
    assert type(get_backend()).__name__ == "LocmemBackend"


def test_the_receiver_needs_its_apps(supalytics_receiver):
    pass
"""


def _hermetic_project(pytester, monkeypatch, ini: str = ""):
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE")
    pytester.makepyfile(
        **{"hproj/__init__": "", "hproj/settings": HERMETIC_SETTINGS, "test_h": HERMETIC_TESTS}
    )
    pytester.makeini(f"[pytest]\nDJANGO_SETTINGS_MODULE = hproj.settings\npythonpath = .\n{ini}")


@pytest.mark.slow
def test_the_plugin_is_hermetic_by_default(pytester, monkeypatch):
    _hermetic_project(pytester, monkeypatch)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        ['*supalytics_receiver needs the mock receiver*INSTALLED_APPS += ["rest_framework"*']
    )


@pytest.mark.slow
def test_the_ini_option_turns_it_off(pytester, monkeypatch):
    _hermetic_project(pytester, monkeypatch, "supalytics_hermetic = false\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "-p", "no:cacheprovider", "-k", "default_is_locmem or keeps"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*FAILED test_h.py::test_default_is_locmem*"])


def test_this_suite_turns_it_off(request):
    """tests/ relies on the real backends: pyproject.toml sets supalytics_hermetic = false."""
    assert request.config.getini("supalytics_hermetic") is False
    assert isinstance(get_backend(), CeleryBackend)
