"""Test settings: testproject's, on PostgreSQL and Redis whenever they answer.

SUPALYTICS_REQUIRE_SERVICES=1 (set by CI) turns a missing service into an error instead of a
fallback to SQLite and in-process stand-ins. URLs can be given with SUPALYTICS_TEST_DATABASE_URL
and SUPALYTICS_TEST_REDIS_URL.
"""

import importlib.util
import json
import os
import socket
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from testproject.settings import *  # noqa: F403
from testproject.settings import BASE_DIR, SQLITE_OPTIONS, database_from_url

REQUIRE_SERVICES = os.environ.get("SUPALYTICS_REQUIRE_SERVICES") == "1"
# Processes started by a test (a Celery worker, a receiver) inherit these to find the test's
# database and cache namespace.
RUN_ID = os.environ.setdefault("SUPALYTICS_TEST_RUN_ID", uuid.uuid4().hex[:8])
RUN_DIR = Path(
    os.environ.setdefault(
        "SUPALYTICS_TEST_RUN_DIR", tempfile.mkdtemp(prefix=f"supalytics-{RUN_ID}-")
    )
)
# Under pytest-xdist each worker has cache keys, broker keys and files of its own (and, from
# pytest-django, databases suffixed with its name); the processes its tests start inherit
# PYTEST_XDIST_WORKER and so find the same ones.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if XDIST_WORKER:
    RUN_ID = f"{RUN_ID}-{XDIST_WORKER}"
    RUN_DIR = RUN_DIR / XDIST_WORKER
    RUN_DIR.mkdir(exist_ok=True)


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=0.5):
            return True
    except OSError:
        return False


def _service(env: str, default: str, what: str) -> str | None:
    url = os.environ.get(env, default)
    if _answers(url):
        return url
    if REQUIRE_SERVICES:
        raise ImproperlyConfigured(
            f"{what} does not answer at {url} (SUPALYTICS_REQUIRE_SERVICES=1)"
        )
    return None


POSTGRES_URL = _service(
    "SUPALYTICS_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test", "PostgreSQL"
)
REDIS_TEST_URL = _service("SUPALYTICS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis")
# MariaDB (or MySQL 8) as a second database, "mariadb": its database name follows PostgreSQL's,
# so that test runs beside each other (test_<name>) do not collide.
_db_name = urlsplit(POSTGRES_URL or "postgres:///test").path.lstrip("/") or "test"
MARIADB_URL = _service(
    "SUPALYTICS_TEST_MARIADB_URL", f"mysql://root@127.0.0.1:3306/{_db_name}", "MariaDB"
)
if MARIADB_URL and importlib.util.find_spec("MySQLdb") is None:
    if REQUIRE_SERVICES:
        raise ImproperlyConfigured(
            "MariaDB answers but mysqlclient is not installed (pip install -e '.[dev]'; it "
            "builds against libmariadb-dev)"
        )
    MARIADB_URL = None

if POSTGRES_URL:
    DATABASES = {"default": database_from_url(POSTGRES_URL)}
    DATABASES["default"].update(CONN_MAX_AGE=300, CONN_HEALTH_CHECKS=True)
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(RUN_DIR / "db.sqlite3"),
            "OPTIONS": SQLITE_OPTIONS,
            # A file, not memory: worker processes started by tests open the same database.
            "TEST": {"NAME": str(RUN_DIR / "test-db.sqlite3")},
        }
    }
# "other": a second database of the same kind, for the outbox in more than one database.
DATABASES["other"] = {
    **DATABASES["default"],
    "NAME": f"{DATABASES['default']['NAME']}_other",
    "TEST": {"NAME": str(RUN_DIR / "test-other.sqlite3")} if not POSTGRES_URL else {},
}
# "sqlite": SQLite whatever the default is, for claims by several processes without row locks.
DATABASES["sqlite"] = {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": str(RUN_DIR / "outbox.sqlite3"),
    "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    "TEST": {"NAME": str(RUN_DIR / "test-outbox.sqlite3")},
}
if MARIADB_URL:
    _parts = urlsplit(MARIADB_URL)
    DATABASES["mariadb"] = {
        "ENGINE": "django.db.backends.mysql",
        "NAME": _parts.path.lstrip("/"),
        "USER": _parts.username or "root",
        "PASSWORD": _parts.password or "",
        "HOST": _parts.hostname or "127.0.0.1",
        "PORT": str(_parts.port or 3306),
        "OPTIONS": {"charset": "utf8mb4"},
    }
# A process started by a test connects straight to the test databases pytest-django made.
if os.environ.get("SUPALYTICS_TEST_DB_NAME"):
    DATABASES["default"]["NAME"] = os.environ["SUPALYTICS_TEST_DB_NAME"]
for _alias, _name in json.loads(os.environ.get("SUPALYTICS_TEST_DB_NAMES", "{}")).items():
    if _alias in DATABASES:
        DATABASES[_alias]["NAME"] = _name
# A process started by a test may keep the outbox in another database ("mariadb").
if os.environ.get("SUPALYTICS_TEST_OUTBOX_DATABASE"):
    DATABASE_ROUTERS = ["tests.routers.OutboxRouter"]

if REDIS_TEST_URL:
    _base = REDIS_TEST_URL.rsplit("/", 1)[0]
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"{_base}/1",
            "KEY_PREFIX": f"test-{RUN_ID}",
        },
        "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    CELERY_BROKER_URL = f"{_base}/2"
    CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"test-{RUN_ID}:"}
    SILENCED_SYSTEM_CHECKS = []
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    _broker_dir = str(RUN_DIR / "broker")
    Path(_broker_dir).mkdir(exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": _broker_dir,
        "data_folder_out": _broker_dir,
        "processed_folder": _broker_dir,
        "control_folder": str(RUN_DIR / "broker" / "control"),
        "store_processed": False,
    }
    SILENCED_SYSTEM_CHECKS = ["supalytics.W002", "supalytics.W102"]
CELERY_BROKER_CONNECTION_TIMEOUT = 2

SUPALYTICS = {
    "API_KEY": "sly_test_key",
    "ENDPOINT": os.environ.get("SUPALYTICS_ENDPOINT", "http://127.0.0.1:9/v1/events"),
    # Publish on the committing thread, so tests see the message at once; the background
    # publisher is tested on its own and by the end-to-end tests.
    "ENQUEUE": os.environ.get("SUPALYTICS_ENQUEUE", "inline"),
}
SUPALYTICS_RECEIVER = {
    "API_KEYS": ["sly_test_key", "sly_test_other"],
    "CONTROL": True,
    "RATE_LIMIT": int(os.environ.get("SUPALYTICS_RECEIVER_RATE_LIMIT", "100")),
    # Benchmarks give a receiver process a clock of its own.
    "CLOCK_OFFSET": float(os.environ.get("SUPALYTICS_RECEIVER_CLOCK_OFFSET", "0")),
}
if os.environ.get("SUPALYTICS_RATE_LIMIT"):  # benchmarks raise it out of the way
    SUPALYTICS["RATE_LIMIT"] = float(os.environ["SUPALYTICS_RATE_LIMIT"])
# Processes started by soak tests and benchmarks: more SUPALYTICS keys, as JSON.
SUPALYTICS.update(json.loads(os.environ.get("SUPALYTICS_TEST_OVERRIDES", "{}")))
if os.environ.get("SUPALYTICS_TEST_BROKER_URL"):
    CELERY_BROKER_URL = os.environ["SUPALYTICS_TEST_BROKER_URL"]
# The transport follows the URL as finally chosen (testproject's settings pick it for theirs):
# on the filesystem, testproject's, which writes each message whole.
CELERY_BROKER_TRANSPORT = (
    "testproject.fsbroker:Transport" if CELERY_BROKER_URL == "filesystem://" else None
)
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {"version": 1, "disable_existing_loggers": False}
TEST_ARTIFACTS = BASE_DIR / "test-artifacts"

# Django's Tasks framework, for DELIVERY_BACKEND = "django_tasks": built into Django 6.0+, the
# django-tasks backport on 5.2; django-tasks-db's DatabaseBackend and its db_worker.
if importlib.util.find_spec("django.tasks") is None:
    INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks"]  # noqa: F405
INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks_db"]
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
# dj-stripe and its ~60 tables are in tests/settings_djstripe.py only, so that the other tests
# neither migrate nor flush them.
