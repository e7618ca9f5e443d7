"""E024: bad values of ``SUPPRESSION`` or ``HONOR_GPC``."""

import pytest

from django_supalytics.checks import check_settings


def ids(settings, **values):
    settings.SUPALYTICS = {**settings.SUPALYTICS, **values}
    return {message.id for message in check_settings()}


@pytest.mark.parametrize("value", ["anonymise", "", None, 1, "DROP"])
def test_e024_suppression_must_be_anonymize_or_drop(settings, value):
    assert "supalytics.E024" in ids(settings, SUPPRESSION=value)


@pytest.mark.parametrize("value", [1, "yes", None, "true"])
def test_e024_honor_gpc_must_be_a_bool(settings, value):
    assert "supalytics.E024" in ids(settings, HONOR_GPC=value)


@pytest.mark.parametrize("suppression", ["anonymize", "drop"])
@pytest.mark.parametrize("gpc", [True, False])
def test_e024_quiet_for_good_values(settings, suppression, gpc):
    assert "supalytics.E024" not in ids(settings, SUPPRESSION=suppression, HONOR_GPC=gpc)
    assert "supalytics.E024" not in ids(settings)
