from unittest import mock

import pytest
from django.core.checks import run_checks
from django.test import override_settings

# With dj-stripe installed (tests/settings.py), run_checks() runs its checks, which read its tables.
pytestmark = pytest.mark.django_db

BASE = {"API_KEY": "sly_test_key", "ENDPOINT": "https://api.supalytics.co/v1/events"}
REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/1",
    }
}


def ids(**supalytics):
    with override_settings(
        SUPALYTICS={**BASE, **supalytics}, CACHES=REDIS, SILENCED_SYSTEM_CHECKS=[]
    ):
        return {
            m.id
            for m in run_checks()
            if (m.id or "").startswith(("supalytics.E0", "supalytics.W0"))
        }


def test_a_good_configuration_passes():
    assert ids() == set()


def test_e001_not_a_dict():
    with override_settings(SUPALYTICS=["x"]):
        assert "supalytics.E001" in {m.id for m in run_checks()}


def test_e002_unknown_key():
    assert ids(API_KYE="x") == {"supalytics.E002"}


@pytest.mark.parametrize("endpoint", ["ftp://x/v1/events", "not a url", "", None, "https://"])
def test_e003_bad_endpoint(endpoint):
    assert ids(ENDPOINT=endpoint) == {"supalytics.E003"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RATE_LIMIT", 0),
        ("RATE_LIMIT", "fast"),
        ("MAX_ATTEMPTS", 0),
        ("READ_TIMEOUT", -1),
        ("BATCH_SIZE", True),
        ("LEASE_SECONDS", None),
    ],
)
def test_e004_bad_numbers(name, value):
    assert ids(**{name: value}) == {"supalytics.E004"}


@pytest.mark.parametrize("key", [" sly_x", "", 42])
def test_e005_malformed_key(key):
    assert ids(API_KEY=key) == {"supalytics.E005"}


def test_w001_no_key(monkeypatch):
    monkeypatch.delenv("SUPALYTICS_API_KEY", raising=False)
    assert ids(API_KEY=None) == {"supalytics.W001"}


def test_w001_not_raised_when_delivery_is_off(monkeypatch):
    monkeypatch.delenv("SUPALYTICS_API_KEY", raising=False)
    assert ids(API_KEY=None, ENABLED=False) == set()


def test_key_from_environment_satisfies_w001(monkeypatch):
    monkeypatch.setenv("SUPALYTICS_API_KEY", "sly_env")
    assert ids(API_KEY=None) == set()


def test_e006_unknown_cache_alias():
    assert ids(CACHE_ALIAS="nope") == {"supalytics.E006"}


def test_w002_per_process_cache():
    with override_settings(
        SUPALYTICS=BASE,
        SILENCED_SYSTEM_CHECKS=[],
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
    ):
        assert "supalytics.W002" in {m.id for m in run_checks()}


def test_w004_plain_http_to_a_remote_host():
    assert ids(ENDPOINT="http://api.example.com/v1/events") == {"supalytics.W004"}
    assert ids(ENDPOINT="http://127.0.0.1:8000/v1/events") == set()


def test_e007_attribution():
    assert ids(ATTRIBUTION="middle") == {"supalytics.E007"}


@pytest.mark.parametrize("order", [[], ["query"], ["header", "header"], "header"])
def test_e008_source_order(order):
    assert ids(SOURCE_ORDER=order) == {"supalytics.E008"}


@pytest.mark.parametrize("field", ["no_such_field", "first_name"])  # first_name holds 150
def test_e009_user_field(field):
    expected = {"supalytics.E009"} if field == "no_such_field" else set()
    assert ids(USER_FIELD=field) == expected


def test_e009_user_field_too_short():
    assert ids(USER_FIELD="username") == set()  # 150 chars: long enough
    assert ids(USER_FIELD="password") == set()  # 128: exactly enough
    assert ids(USER_FIELD="is_staff") == set()  # no max_length to compare


def test_e010_middleware_before_authentication(settings):
    middleware = [m for m in settings.MIDDLEWARE if "VisitorId" not in m]
    auth = middleware.index("django.contrib.auth.middleware.AuthenticationMiddleware")
    middleware.insert(auth, "django_supalytics.middleware.VisitorIdMiddleware")
    with override_settings(MIDDLEWARE=middleware):
        assert "supalytics.E010" in {m.id for m in run_checks()}


def test_receiver_checks():
    with override_settings(SUPALYTICS_RECEIVER={"API_KEYS": []}, CACHES=REDIS):
        assert "supalytics.W101" in {m.id for m in run_checks()}
    with override_settings(SUPALYTICS_RECEIVER={"API_KEYS": "sly_x"}, CACHES=REDIS):
        assert "supalytics.E102" in {m.id for m in run_checks()}
    with override_settings(SUPALYTICS_RECEIVER={"API_KEYS": ["k"], "RATE_LIMIT": 0}, CACHES=REDIS):
        assert "supalytics.E103" in {m.id for m in run_checks()}
    with override_settings(SUPALYTICS_RECEIVER={"API_KEYS": ["k"], "CACHE_ALIAS": "x"}):
        assert "supalytics.E104" in {m.id for m in run_checks()}
    with override_settings(
        SUPALYTICS_RECEIVER={"API_KEYS": ["k"], "CONTROL": True}, DEBUG=False, CACHES=REDIS
    ):
        assert "supalytics.W103" in {m.id for m in run_checks()}


def test_receiver_checks_shape_and_cache():
    with override_settings(SUPALYTICS_RECEIVER=["k"]):
        assert "supalytics.E101" in {m.id for m in run_checks()}
    with override_settings(
        SUPALYTICS_RECEIVER={"API_KEYS": ["k"]},
        SILENCED_SYSTEM_CHECKS=[],
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
    ):
        assert "supalytics.W102" in {m.id for m in run_checks()}


@pytest.mark.parametrize(
    ("options", "warned"),
    [
        ({}, True),
        ({"timeout": 20}, True),
        ({"transaction_mode": "DEFERRED"}, True),
        ({"transaction_mode": "IMMEDIATE"}, False),
        ({"transaction_mode": "immediate", "timeout": 5}, False),
    ],
)
def test_w003_sqlite_outbox_without_immediate_transactions(settings, options, warned):
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": "x.sqlite3", "OPTIONS": options}
    with mock.patch.dict(settings.DATABASES, {"default": sqlite}):
        found = {m.id for m in run_checks()}
    assert ("supalytics.W003" in found) is warned


def test_w003_not_raised_for_other_databases(settings):
    postgres = {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}
    with mock.patch.dict(settings.DATABASES, {"default": postgres}):
        assert "supalytics.W003" not in {m.id for m in run_checks()}
