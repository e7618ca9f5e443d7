"""System checks: one stable ID for each way to misconfigure the app (``docs/settings.md``)."""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import connections

from .client import api_key_problem
from .conf import DEFAULTS, conf

PER_PROCESS_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)
NUMBERS = {
    "RATE_LIMIT": 1.0,
    "CONNECT_TIMEOUT": 0.001,
    "READ_TIMEOUT": 0.001,
    "MAX_ATTEMPTS": 1,
    "BACKOFF_BASE": 0.001,
    "BACKOFF_MAX": 0.001,
    "RATE_LIMIT_WAIT_MAX": 0.001,
    "OUTAGE_THRESHOLD": 1,
    "OUTAGE_PROBE_BASE": 0.001,
    "OUTAGE_PROBE_MAX": 0.001,
    "MAX_COUNTDOWN": 0.0,
    "LEASE_SECONDS": 1.0,
    "SWEEP_GRACE": 0.0,
    "BATCH_SIZE": 1,
    "SEND_CONCURRENCY": 1,
    "RETENTION_DAYS": 0.0,
    "PURGE_BATCH_SIZE": 1,
}
#: An HTTP token (RFC 9110, section 5.6.2): what a header or cookie name may be made of.
HTTP_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: Field names that hold secrets or account data, never a visitor ID or metadata to send.
SENSITIVE_NAME_RE = re.compile(
    r"password|passwd|secret|token|api_?key|salt|otp|^is_|^last_login$|^date_joined$", re.I
)
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "testserver"}


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.") or host.endswith(".localhost")


REDIS_CACHES = (
    "django.core.cache.backends.redis.RedisCache",
    "django_redis.cache.RedisCache",
)


def _check_limiter_cache(alias: str, backend: str) -> list[CheckMessage]:
    """W002: the shared limiter needs Redis; any other cache gets a per-process one."""
    if backend in REDIS_CACHES:
        return []
    if backend == "django.core.cache.backends.dummy.DummyCache":
        problem = "is a DummyCache, which stores nothing: no rate limit would apply at all"
    else:
        problem = (
            f"is {backend or 'unset'}, not Redis: the limiter falls back to a lock in each "
            "process, so each worker process would send at the full rate on its own"
        )
    return [
        Warning(
            f"The cache {alias!r} that holds the rate limiter {problem}.",
            hint="Use a Redis cache (django.core.cache.backends.redis.RedisCache) whenever "
            "more than one process sends.",
            id="supalytics.W002",
        )
    ]


@register(Tags.security)
def check_endpoint_security(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    endpoint = (
        conf.raw.get("ENDPOINT", DEFAULTS["ENDPOINT"]) if isinstance(conf.raw, dict) else None
    )
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts and parts.scheme == "http" and parts.hostname and not _is_loopback(parts.hostname):
        return [
            Warning(
                "SUPALYTICS['ENDPOINT'] is plain http on a remote host: the API key would "
                "travel unencrypted.",
                hint="Use https, or a loopback address for a local receiver.",
                id="supalytics.W004",
            )
        ]
    return []


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    raw = conf.raw
    if not isinstance(raw, dict):
        return [Error("SUPALYTICS must be a dict.", id="supalytics.E001")]
    errors: list[CheckMessage] = []
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        errors.append(
            Error(
                f"SUPALYTICS has unknown keys: {', '.join(map(str, unknown))}.",
                hint="See docs/settings.md for the keys there are.",
                id="supalytics.E002",
            )
        )
    endpoint = raw.get("ENDPOINT", DEFAULTS["ENDPOINT"])
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        errors.append(
            Error(
                f"SUPALYTICS['ENDPOINT'] must be an http(s) URL, not {endpoint!r}.",
                id="supalytics.E003",
            )
        )
    for name, minimum in NUMBERS.items():
        value = raw.get(name, DEFAULTS[name])
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < minimum
        ):
            errors.append(
                Error(
                    f"SUPALYTICS['{name}'] must be a number of at least {minimum}, not {value!r}.",
                    id="supalytics.E004",
                )
            )
    key = conf.API_KEY
    raw_key = raw.get("API_KEY")
    problem = api_key_problem(key if raw_key is None or key else raw_key)
    if (raw_key is not None or key) and problem:
        errors.append(
            Error(
                f"{problem}.",
                hint="A key is printable ASCII without spaces; surrounding whitespace (a "
                "secret file's trailing newline) is stripped.",
                id="supalytics.E005",
            )
        )
    elif not key and conf.ENABLED:
        errors.append(
            Warning(
                "No Supalytics API key: events are recorded but not sent.",
                hint="Set SUPALYTICS['API_KEY'] or the SUPALYTICS_API_KEY environment variable, "
                "or SUPALYTICS['ENABLED'] = False to say this is intended.",
                id="supalytics.W001",
            )
        )
    alias = raw.get("CACHE_ALIAS", DEFAULTS["CACHE_ALIAS"])
    caches = getattr(settings, "CACHES", {"default": {}})
    if alias not in caches:
        errors.append(
            Error(
                f"SUPALYTICS['CACHE_ALIAS'] is {alias!r}, which is not in CACHES.",
                id="supalytics.E006",
            )
        )
    else:
        errors.extend(_check_limiter_cache(alias, str(caches[alias].get("BACKEND", ""))))
    if raw.get("ENQUEUE", DEFAULTS["ENQUEUE"]) not in ("background", "inline"):
        errors.append(
            Error(
                f"SUPALYTICS['ENQUEUE'] is {raw.get('ENQUEUE')!r}; it must be 'background' "
                "or 'inline'.",
                id="supalytics.E020",
            )
        )
    queue = raw.get("TASK_QUEUE", DEFAULTS["TASK_QUEUE"])
    if queue is not None and (not isinstance(queue, str) or not queue.strip()):
        errors.append(
            Error(
                f"SUPALYTICS['TASK_QUEUE'] must be a queue name (a non-empty string) or None, "
                f"not {queue!r}.",
                id="supalytics.E021",
            )
        )
    if raw.get("ATTRIBUTION", DEFAULTS["ATTRIBUTION"]) not in ("first", "last"):
        errors.append(
            Error("SUPALYTICS['ATTRIBUTION'] must be 'first' or 'last'.", id="supalytics.E007")
        )
    order = raw.get("SOURCE_ORDER", DEFAULTS["SOURCE_ORDER"])
    if (
        not isinstance(order, list | tuple)
        or not order
        or not set(order) <= {"header", "cookie"}
        or len(set(order)) != len(order)
    ):
        errors.append(
            Error(
                "SUPALYTICS['SOURCE_ORDER'] must list 'header' and/or 'cookie', each once.",
                id="supalytics.E008",
            )
        )
    failed_days = raw.get("FAILED_RETENTION_DAYS", DEFAULTS["FAILED_RETENTION_DAYS"])
    if failed_days is not None and (
        isinstance(failed_days, bool) or not isinstance(failed_days, int | float) or failed_days < 0
    ):
        errors.append(
            Error(
                "SUPALYTICS['FAILED_RETENTION_DAYS'] must be a number of at least 0, or None, "
                f"not {failed_days!r}.",
                id="supalytics.E004",
            )
        )
    aliases = raw.get("OUTBOX_DATABASES", DEFAULTS["OUTBOX_DATABASES"])
    known = set(getattr(settings, "DATABASES", {}) or {})
    if (
        not isinstance(aliases, list | tuple)
        or not all(isinstance(alias, str) for alias in aliases)
        or not set(aliases) <= known
    ):
        errors.append(
            Error(
                f"SUPALYTICS['OUTBOX_DATABASES'] must list aliases of DATABASES, not {aliases!r}.",
                id="supalytics.E015",
            )
        )
    errors.extend(_check_user_field(raw.get("USER_FIELD")))
    for name, check_id in (("HEADER_NAME", "supalytics.E012"), ("COOKIE_NAME", "supalytics.E013")):
        value = raw.get(name, DEFAULTS[name])
        if not isinstance(value, str) or not HTTP_TOKEN_RE.fullmatch(value):
            errors.append(
                Error(
                    f"SUPALYTICS['{name}'] must be an HTTP token (letters, digits and "
                    f"!#$%&'*+-.^_`|~), not {value!r}.",
                    hint="It is sent by browsers, and the header name is written into a script.",
                    id=check_id,
                )
            )
    return errors


def sensitive_field(model: Any, name: str) -> bool:
    """True for a field of ``model`` that holds a secret or account data."""
    if SENSITIVE_NAME_RE.search(name):
        return True
    account = {
        getattr(model, "USERNAME_FIELD", None),
        getattr(model, "EMAIL_FIELD", None),
        *getattr(model, "REQUIRED_FIELDS", ()),
    }
    return name in account


@register(Tags.database)
def check_skip_locked(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """The outbox's databases must skip locked rows (or have no row locks at all, as SQLite),
    or every claim would raise ``NotSupportedError``. Run by ``migrate`` and
    ``check --database``."""
    from .delivery import outbox_aliases

    errors: list[CheckMessage] = []
    for alias in outbox_aliases():
        if databases is None or alias not in databases:
            continue
        connection = connections[alias]
        features = connection.features
        if features.has_select_for_update and not features.has_select_for_update_skip_locked:
            version = ".".join(map(str, connection.get_database_version()))
            errors.append(
                Error(
                    f"The outbox's database {alias!r} is {connection.display_name} {version}, "
                    "which has no SELECT ... FOR UPDATE SKIP LOCKED: workers could not claim "
                    "events.",
                    hint="Use PostgreSQL, MySQL 8.0.1+, MariaDB 10.6+ or SQLite.",
                    id="supalytics.E014",
                )
            )
    return errors


def _check_user_field(field: Any) -> list[CheckMessage]:
    if field is None:
        return []
    from django.contrib.auth import get_user_model
    from django.core.exceptions import FieldDoesNotExist

    model = get_user_model()
    try:
        model_field = model._meta.get_field(str(field))
    except FieldDoesNotExist:
        return [
            Error(
                f"SUPALYTICS['USER_FIELD'] is {field!r}, which is not a field of "
                f"{model._meta.label}.",
                id="supalytics.E009",
            )
        ]
    from django.db import models

    if (
        model_field.is_relation
        or not isinstance(model_field, models.CharField | models.TextField)
        or getattr(model_field, "primary_key", False)
        or sensitive_field(model, str(field))
    ):
        return [
            Error(
                f"SUPALYTICS['USER_FIELD'] is {field!r}: {model._meta.label}.{field} is not a "
                "spare text field. The visitor ID would overwrite it, or be read from it.",
                hint="Add a CharField(max_length=128, blank=True) for it, or leave USER_FIELD "
                "unset to use VisitorIdentity.",
                id="supalytics.E011",
            )
        ]
    max_length = getattr(model_field, "max_length", None)
    if max_length is not None and max_length < 128:
        return [
            Error(
                f"{model._meta.label}.{field} holds {max_length} characters; "
                "a visitor ID may have 128.",
                id="supalytics.E019",
            )
        ]
    return []


@register(Tags.compatibility)
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    middleware = list(getattr(settings, "MIDDLEWARE", []) or [])
    ours = "django_supalytics.middleware.VisitorIdMiddleware"
    auth = "django.contrib.auth.middleware.AuthenticationMiddleware"
    if (
        ours in middleware
        and auth in middleware
        and middleware.index(ours) < middleware.index(auth)
    ):
        return [
            Error(
                "VisitorIdMiddleware must come after AuthenticationMiddleware in MIDDLEWARE, "
                "so that it can store the visitor ID on the logged-in user.",
                id="supalytics.E010",
            )
        ]
    return []


@register(Tags.compatibility)
def check_sqlite_transactions(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from django.db import router

    from .models import OutboxEvent

    alias = router.db_for_write(OutboxEvent) or "default"
    database = getattr(settings, "DATABASES", {}).get(alias, {})
    if not str(database.get("ENGINE", "")).endswith("sqlite3"):
        return []
    mode = str((database.get("OPTIONS") or {}).get("transaction_mode") or "DEFERRED")
    if mode.upper() == "IMMEDIATE":
        return []
    return [
        Warning(
            f"The outbox is in the SQLite database {alias!r}, whose transactions are "
            f"{mode.upper()}: with several worker processes, claims fail with "
            "'database is locked'.",
            hint=f"Set DATABASES[{alias!r}]['OPTIONS'] = "
            '{"transaction_mode": "IMMEDIATE", "timeout": 20}.',
            id="supalytics.W003",
        )
    ]


DELIVERY_BACKENDS = ("celery", "django_tasks", "none")


@register(Tags.compatibility)
def check_delivery_backend(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    backend = conf.DELIVERY_BACKEND
    if backend not in DELIVERY_BACKENDS:
        return [
            Error(
                f"SUPALYTICS['DELIVERY_BACKEND'] is {backend!r}; it must be one of "
                f"{', '.join(map(repr, DELIVERY_BACKENDS))}.",
                id="supalytics.E016",
            )
        ]
    if backend == "django_tasks":
        return _check_tasks_framework()
    if backend == "celery":
        from celery import current_app

        if current_app.main in (None, "default"):
            return [
                Warning(
                    "DELIVERY_BACKEND is 'celery', but no Celery app is configured: "
                    "deliveries would go to Celery's default app and broker.",
                    hint="Define a Celery app that reads Django's settings and calls "
                    "autodiscover_tasks(), or choose DELIVERY_BACKEND 'django_tasks' or 'none'.",
                    id="supalytics.W005",
                )
            ]
    return []


def _check_tasks_framework() -> list[CheckMessage]:
    from importlib.util import find_spec

    if find_spec("django.tasks") is None and find_spec("django_tasks") is None:
        return [
            Error(
                "DELIVERY_BACKEND is 'django_tasks', but Django's Tasks framework is not "
                "available (it comes with Django 6.0).",
                hint="Upgrade to Django 6.0+, or on Django 5.2 pip install django-tasks "
                "(the backport) and add 'django_tasks' to INSTALLED_APPS.",
                id="supalytics.E017",
            )
        ]
    try:
        from .tasks_framework import deliver_events

        deliver_events.get_backend()
    except Exception as exc:
        return [
            Error(
                f"DELIVERY_BACKEND is 'django_tasks', but the TASKS backend cannot be "
                f"loaded: {exc}",
                hint="Configure settings.TASKS, e.g. django-tasks-db's DatabaseBackend.",
                id="supalytics.E018",
            )
        ]
    return []
