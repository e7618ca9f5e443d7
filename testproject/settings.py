"""testproject: a small site that uses django-supalytics the way a user's project would.

Embedded defaults (SQLite, a filesystem Celery broker, an in-process cache) need no servers.
Set DATABASE_URL, CELERY_BROKER_URL and REDIS_URL to use PostgreSQL and Redis.
"""

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("TESTPROJECT_VAR_DIR", BASE_DIR / ".var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "testproject-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_supalytics",
    "django_supalytics.receiver",
    "testproject.shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_supalytics.middleware.VisitorIdMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "testproject.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "testproject" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
WSGI_APPLICATION = "testproject.wsgi.application"


def database_from_url(url: str) -> dict[str, object]:
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parts.path[1:])}
    if parts.scheme in ("postgres", "postgresql"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path[1:]),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
        }
    raise ValueError(f"unsupported DATABASE_URL scheme {parts.scheme!r}")


# SQLite with several processes (the site, worker children, beat) writing: every transaction
# takes the write lock when it begins (IMMEDIATE) and waits up to 20 s for it, instead of
# failing with "database is locked" when a read turns into a write; WAL lets readers go on
# while one process writes. docs/delivery.md, "SQLite".
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}

if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": database_from_url(os.environ["DATABASE_URL"])}
    # Persistent connections: a new PostgreSQL connection per request costs more than the
    # request (the mock receiver answers hundreds a second).
    DATABASES["default"].update(CONN_MAX_AGE=300, CONN_HEALTH_CHECKS=True)
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
            "OPTIONS": SQLITE_OPTIONS,
        }
    }

REDIS_URL = os.environ.get("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # One worker process and one receiver process in the demo: a per-process cache is enough.
    SILENCED_SYSTEM_CHECKS = ["supalytics.W002", "supalytics.W102"]

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT: str | None = None  # the URL's
if CELERY_BROKER_URL == "filesystem://":
    CELERY_BROKER_TRANSPORT = "testproject.fsbroker:Transport"  # messages written whole
    _broker_dir = VAR_DIR / "broker"
    _broker_dir.mkdir(exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "supalytics-sweep": {
        "task": "django_supalytics.tasks.sweep_outbox",
        "schedule": timedelta(seconds=30),
    },
    "supalytics-purge": {
        "task": "django_supalytics.tasks.purge_outbox",
        "schedule": timedelta(hours=1),
    },
}

DEMO_API_KEY = "sly_test_demo"
SUPALYTICS: dict[str, object] = {
    "API_KEY": os.environ.get("SUPALYTICS_API_KEY", DEMO_API_KEY),
    # The site is its own Supalytics in development: the mock receiver is mounted below.
    "ENDPOINT": os.environ.get("SUPALYTICS_ENDPOINT", "http://127.0.0.1:8000/v1/events"),
    # A development site retries within seconds, so an outage of the local mock heals while
    # you watch (production keeps the defaults: 2 s doubling up to 15 minutes).
    "BACKOFF_BASE": 0.5,
    "BACKOFF_MAX": 5.0,
}
SUPALYTICS_RECEIVER = {"API_KEYS": [DEMO_API_KEY], "CONTROL": DEBUG}

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
LOGIN_REDIRECT_URL = "/"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_supalytics": {"handlers": ["console"], "level": "INFO"}},
}
