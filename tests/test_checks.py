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


def test_e002_names_the_replacement_of_a_replaced_key():
    with override_settings(SUPALYTICS={**BASE, "READ_TIMEOUT": 5, "CONNECT_TIMEOUT": 1}):
        [message] = [m for m in run_checks() if m.id == "supalytics.E002"]
    assert message.hint == (
        "Replaced: CONNECT_TIMEOUT by REQUEST_TIMEOUT, READ_TIMEOUT by REQUEST_TIMEOUT. "
        "See docs/settings.md for the keys there are."
    )


@pytest.mark.parametrize("endpoint", ["ftp://x/v1/events", "not a url", "", None, "https://"])
def test_e003_bad_endpoint(endpoint):
    assert ids(ENDPOINT=endpoint) == {"supalytics.E003"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RATE_LIMIT", 0),
        ("RATE_LIMIT", "fast"),
        ("MAX_ATTEMPTS", 0),
        ("REQUEST_TIMEOUT", -1),
        ("BATCH_SIZE", True),
        ("LEASE_SECONDS", None),
        ("RATE_LIMIT", float("nan")),
        ("RATE_LIMIT", float("inf")),
        ("REQUEST_TIMEOUT", float("nan")),
        ("RETENTION_DAYS", float("nan")),
        ("RETENTION_DAYS", float("inf")),
        ("BACKOFF_MAX", float("inf")),
    ],
)
def test_e004_bad_numbers(name, value):
    assert ids(**{name: value}) == {"supalytics.E004"}


@pytest.mark.parametrize("key", ["", "   ", 42, "sly\nx", "sly x", "sly_\u043a\u043b"])
def test_e005_malformed_key(key):
    assert ids(API_KEY=key) == {"supalytics.E005"}


def test_e005_never_quotes_the_key():
    with override_settings(SUPALYTICS={**BASE, "API_KEY": "sly_secret\nkey"}):
        messages = [m for m in run_checks() if m.id == "supalytics.E005"]
    assert messages and all("sly_secret" not in str(m) for m in messages)


def test_surrounding_whitespace_of_a_key_is_not_an_error():
    assert ids(API_KEY=" sly_x\n") == set()


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


@pytest.mark.parametrize(
    ("backend", "warned"),
    [
        ("django.core.cache.backends.locmem.LocMemCache", True),
        ("django.core.cache.backends.filebased.FileBasedCache", True),
        ("django.core.cache.backends.db.DatabaseCache", True),
        ("django.core.cache.backends.memcached.PyMemcacheCache", True),
        ("django.core.cache.backends.dummy.DummyCache", True),
        ("django.core.cache.backends.redis.RedisCache", False),
        ("django_redis.cache.RedisCache", False),
    ],
)
def test_w002_any_cache_but_redis(backend, warned):
    from django_supalytics.checks import check_settings

    with override_settings(
        SUPALYTICS=BASE, CACHES={"default": {"BACKEND": backend, "LOCATION": "x"}}
    ):
        found = [m for m in check_settings() if m.id == "supalytics.W002"]
    assert bool(found) is warned
    if "Dummy" in backend:
        assert "no rate limit would apply at all" in found[0].msg


@pytest.mark.parametrize(
    ("backend", "module"),
    [
        ("django.core.cache.backends.redis.RedisCache", "redis"),
        ("django_redis.cache.RedisCache", "django_redis"),
    ],
)
def test_e025_a_redis_cache_without_its_client_library(backend, module):
    import sys
    from unittest import mock

    from django_supalytics.checks import check_settings

    with (
        mock.patch.dict(sys.modules, {module: None}),  # not installed
        override_settings(
            SUPALYTICS=BASE, CACHES={"default": {"BACKEND": backend, "LOCATION": "x"}}
        ),
    ):
        found = [m for m in check_settings() if m.id == "supalytics.E025"]
    assert len(found) == 1 and f"{module!r} is not installed" in found[0].msg
    assert found[0].hint == 'pip install "django-supalytics[redis]"'


def test_w002_per_process_cache_through_run_checks():
    with override_settings(
        SUPALYTICS=BASE,
        SILENCED_SYSTEM_CHECKS=[],
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
    ):
        assert "supalytics.W002" in {m.id for m in run_checks()}


def test_w004_is_a_security_check():
    from django.core.checks import Tags

    with override_settings(
        SUPALYTICS={**BASE, "ENDPOINT": "http://api.example.com/v1/events"}, CACHES=REDIS
    ):
        assert "supalytics.W004" in {m.id for m in run_checks(tags=[Tags.security])}
        assert "supalytics.W004" not in {m.id for m in run_checks(tags=[Tags.compatibility])}


@pytest.mark.parametrize("value", ["bogus", "", None])
def test_e020_enqueue(value):
    assert ids(ENQUEUE=value) == {"supalytics.E020"}


@pytest.mark.parametrize("value", [123, "", " ", ["q"]])
def test_e021_task_queue(value):
    assert ids(TASK_QUEUE=value) == {"supalytics.E021"}


def test_e021_a_queue_name_or_none_passes():
    assert ids(TASK_QUEUE="supalytics") == set()
    assert ids(TASK_QUEUE=None) == set()


@pytest.mark.parametrize(
    "value", [["page_viewed"], {"page_viewed": 0}, {"page_viewed": True}, {"e": "1d"}, {1: 60}]
)
def test_e022_max_age(value):
    assert ids(MAX_AGE=value) == {"supalytics.E022"}


def test_e022_names_with_seconds_pass():
    assert ids(MAX_AGE={"page_viewed": 86400, "ping": 0.5}) == set()


@pytest.mark.parametrize("value", ["", "  ", 123, ["t"]])
def test_e023_metrics_token(value):
    assert ids(METRICS_TOKEN=value) == {"supalytics.E023"}


def test_e023_a_token_or_none_passes():
    assert ids(METRICS_TOKEN="scrape-me") == set()
    assert ids(METRICS_TOKEN=None) == set()


def test_e019_user_field_too_short():
    from django.contrib.auth import get_user_model

    field = get_user_model()._meta.get_field("last_name")
    with mock.patch.object(field, "max_length", 30):
        assert ids(USER_FIELD="last_name") == {"supalytics.E019"}


def test_e105_unknown_receiver_key():
    with override_settings(SUPALYTICS_RECEIVER={"API_KEYS": ["k"], "RATE_LIMTI": 5}, CACHES=REDIS):
        assert "supalytics.E105" in {m.id for m in run_checks()}


def test_the_receiver_without_drf_names_the_extra_to_install():
    from importlib.util import find_spec

    from django.apps import apps

    from django_supalytics.exceptions import SupalyticsConfigError

    def without_drf(name, *args):
        return None if name == "rest_framework" else find_spec(name, *args)

    config = apps.get_app_config("supalytics_receiver")
    with (
        mock.patch("importlib.util.find_spec", without_drf),
        pytest.raises(SupalyticsConfigError, match=r"django-supalytics\[receiver\]"),
    ):
        config.ready()


def test_w004_plain_http_to_a_remote_host():
    assert ids(ENDPOINT="http://api.example.com/v1/events") == {"supalytics.W004"}
    assert ids(ENDPOINT="http://127.0.0.1:8000/v1/events") == set()


@pytest.mark.parametrize(
    "host", ["127.attacker.example", "localhost.attacker.example", "127.0.0.1.nip.io"]
)
def test_w004_a_name_that_only_looks_like_loopback_is_remote(host):
    assert ids(ENDPOINT=f"http://{host}/v1/events") == {"supalytics.W004"}


@pytest.mark.parametrize(
    "host", ["localhost", "app.localhost", "127.0.0.2", "[::1]", "LOCALHOST", "testserver"]
)
def test_w004_loopback_addresses_and_names_are_local(host):
    assert ids(ENDPOINT=f"http://{host}:8000/v1/events") == set()


def test_e007_attribution():
    assert ids(ATTRIBUTION="middle") == {"supalytics.E007"}


@pytest.mark.parametrize("order", [[], ["query"], ["header", "header"], "header"])
def test_e008_source_order(order):
    assert ids(SOURCE_ORDER=order) == {"supalytics.E008"}


@pytest.mark.parametrize("field", ["no_such_field", "first_name"])  # first_name holds 150
def test_e009_user_field(field):
    expected = {"supalytics.E009"} if field == "no_such_field" else set()
    assert ids(USER_FIELD=field) == expected


def test_e009_user_field_too_short(settings):
    assert ids(USER_FIELD="last_name") == set()  # 150 chars: long enough
    assert ids(USER_FIELD="first_name") == set()


@pytest.mark.parametrize(
    "field",
    [
        "password",
        "username",
        "email",
        "is_staff",
        "is_superuser",
        "is_active",
        "last_login",
        "date_joined",
        "id",
        "groups",
        "user_permissions",
    ],
)
def test_e011_user_field_must_be_a_spare_text_field(field):
    assert ids(USER_FIELD=field) == {"supalytics.E011"}


@pytest.mark.parametrize(
    "name", ["X Vid", "</script><script>alert(1)</script>", "X-Vid\n", "", "X:Vid", 42, "é"]
)
def test_e012_header_name_must_be_an_http_token(name):
    assert ids(HEADER_NAME=name) == {"supalytics.E012"}


@pytest.mark.parametrize("name", ["a b", "vid;x", "", "v=1", None])
def test_e013_cookie_name_must_be_an_http_token(name):
    assert ids(COOKIE_NAME=name) == {"supalytics.E013"}


def test_e012_e013_accept_tokens():
    assert ids(HEADER_NAME="X-Visitor_Id.2", COOKIE_NAME="_vid") == set()


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
    for offset in ("1", 86401, float("nan"), True):
        with override_settings(
            SUPALYTICS_RECEIVER={"API_KEYS": ["k"], "CLOCK_OFFSET": offset}, CACHES=REDIS
        ):
            assert "supalytics.E106" in {m.id for m in run_checks()}
    with override_settings(
        SUPALYTICS_RECEIVER={"API_KEYS": ["k"], "CLOCK_OFFSET": -0.4}, CACHES=REDIS
    ):
        assert "supalytics.E106" not in {m.id for m in run_checks()}
    with override_settings(
        SUPALYTICS_RECEIVER={"API_KEYS": ["k"], "CONTROL": True}, DEBUG=False, CACHES=REDIS
    ):
        assert "supalytics.W103" in {m.id for m in run_checks()}


#: A project's urls without the receiver: ``ROOT_URLCONF = "tests.test_checks"``.
urlpatterns: list[object] = []


@pytest.mark.parametrize(
    ("urlconf", "fires"),
    [
        ("tests.test_checks", False),  # installed for the test fixtures only
        ("testproject.urls", True),  # included in the project's urls
        ("django_supalytics.receiver.urls", True),  # the standalone receiver's own urls
    ],
)
def test_w101_only_when_the_project_serves_the_receiver(urlconf, fires):
    with override_settings(
        SUPALYTICS_RECEIVER={}, ROOT_URLCONF=urlconf, CACHES=REDIS, SILENCED_SYSTEM_CHECKS=[]
    ):
        assert ("supalytics.W101" in {m.id for m in run_checks()}) is fires


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


@pytest.mark.parametrize(
    "backend",
    [
        "rq",  # no such alias
        "myproject.backends.RqBackend",  # does not import
        "django_supalytics.backends.cron.NoSuchBackend",  # not in its module
        "django_supalytics.tasks.deliver_event",  # not a BaseDeliveryBackend
        "django.tasks.backends.immediate.ImmediateBackend",  # nor is this
    ],
)
def test_e016_delivery_backend_names_no_delivery_backend(backend):
    assert ids(DELIVERY_BACKEND=backend) == {"supalytics.E016"}


def test_e016_says_what_is_wrong_with_the_setting():
    from django_supalytics.checks import check_delivery_backend

    with override_settings(SUPALYTICS={**BASE, "DELIVERY_BACKEND": "myproject.RqBackend"}):
        [error] = check_delivery_backend()
    assert "'myproject.RqBackend'" in error.msg and "cannot be imported" in error.msg


@pytest.mark.parametrize(
    "backend", ["celery", "django_tasks", "cron", "none", "locmem", "tests.backends.FlakyBackend"]
)
def test_every_delivery_backend_passes_when_it_can_work(backend):
    assert ids(DELIVERY_BACKEND=backend) == set()


def test_e017_tasks_framework_missing():
    from importlib.util import find_spec

    def without_tasks(name, *args):
        return None if name in ("django.tasks", "django_tasks") else find_spec(name, *args)

    with mock.patch("importlib.util.find_spec", without_tasks):
        assert ids(DELIVERY_BACKEND="django_tasks") == {"supalytics.E017"}


def test_e018_tasks_backend_that_cannot_be_loaded(settings):
    from django_supalytics.checks import check_delivery_backend

    # The framework's own checks raise on such a TASKS; ours explains it.
    settings.TASKS = {"default": {"BACKEND": "no.such.Backend"}}
    settings.SUPALYTICS = {**BASE, "DELIVERY_BACKEND": "django_tasks"}
    assert [m.id for m in check_delivery_backend()] == ["supalytics.E018"]


def test_w005_celery_without_an_app():
    from celery import Celery

    with mock.patch("celery.current_app", Celery(set_as_current=False)):
        assert ids(DELIVERY_BACKEND="celery") == {"supalytics.W005"}


def test_every_check_id_is_documented():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    source = "".join(path.read_text() for path in (root / "django_supalytics").rglob("*.py"))
    ids_in_code = set(re.findall(r"supalytics\.[EW]\d{3}", source))
    documented = set(re.findall(r"supalytics\.[EW]\d{3}", (root / "docs/settings.md").read_text()))
    assert {"supalytics.E011", "supalytics.E025", "supalytics.W002"} <= ids_in_code
    assert ids_in_code <= documented


def test_e004_failed_retention_days():
    assert "supalytics.E004" in ids(FAILED_RETENTION_DAYS=-1)
    assert "supalytics.E004" in ids(FAILED_RETENTION_DAYS="30")
    assert ids(FAILED_RETENTION_DAYS=None) == set()


def test_e015_outbox_databases_must_be_aliases():
    assert "supalytics.E015" in ids(OUTBOX_DATABASES=["nope"])
    assert "supalytics.E015" in ids(OUTBOX_DATABASES="other")
    assert ids(OUTBOX_DATABASES=["other"]) == set()


@pytest.mark.django_db
def test_e014_a_database_without_skip_locked_is_refused():
    from unittest import mock

    from django.db import connections

    from django_supalytics.checks import check_skip_locked

    connection = connections["default"]

    assert check_skip_locked(databases=["default"]) == []
    assert check_skip_locked(databases=None) == []  # database checks run only when asked
    features = connection.features
    with (
        mock.patch.object(type(features), "has_select_for_update", True),
        mock.patch.object(type(features), "has_select_for_update_skip_locked", False),
        mock.patch.object(type(connection), "get_database_version", return_value=(10, 5, 9)),
    ):
        [error] = check_skip_locked(databases=["default"])
    assert error.id == "supalytics.E014"
    assert f"is {connection.display_name} 10.5.9" in error.msg
