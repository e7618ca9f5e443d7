"""Settings views: every key read on each access, converted to its annotated type."""

import pytest

from django_supalytics.conf import DEFAULTS, Settings, SettingsView, conf


def test_each_key_is_read_on_access_and_converted(settings):
    settings.SUPALYTICS = {"RATE_LIMIT": "50", "FAILED_RETENTION_DAYS": None, "TASK_QUEUE": 7}
    assert conf.RATE_LIMIT == 50.0 and isinstance(conf.RATE_LIMIT, float)
    assert conf.FAILED_RETENTION_DAYS is None
    assert conf.TASK_QUEUE == "7"
    assert not conf.OUTBOX_DATABASES
    settings.SUPALYTICS = {"FAILED_RETENTION_DAYS": 3, "OUTBOX_DATABASES": ["a", "b"]}
    assert conf.FAILED_RETENTION_DAYS == 3.0
    assert conf.OUTBOX_DATABASES == ("a", "b")
    assert conf.RATE_LIMIT == 98.0  # the default


def test_a_setting_that_is_not_a_dict_leaves_every_default(settings):
    settings.SUPALYTICS = "nonsense"  # the system check says so; reading must not fail
    assert conf.SEND_CONCURRENCY == 4  # the default


def test_every_default_is_an_attribute():
    for name in DEFAULTS:
        assert isinstance(getattr(Settings, name), property), name


def test_a_default_without_an_annotation_or_property_is_a_mistake_found_at_import():
    with pytest.raises(TypeError, match=r"\['FORGOTTEN'\]"):

        class Forgetful(SettingsView):
            setting = "SUPALYTICS_X"
            defaults = {"KEPT": 1, "FORGOTTEN": 2}

            KEPT: int
