"""System checks: one stable ID for each way to misconfigure the app (``docs/settings.md``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import connections

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
    "MAX_COUNTDOWN": 0.0,
    "LEASE_SECONDS": 1.0,
    "SWEEP_GRACE": 0.0,
    "BATCH_SIZE": 1,
    "SEND_CONCURRENCY": 1,
    "RETENTION_DAYS": 0.0,
    "PURGE_BATCH_SIZE": 1,
}
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "testserver"}


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.") or host.endswith(".localhost")


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
    elif parts.scheme == "http" and not _is_loopback(parts.hostname):
        errors.append(
            Warning(
                "SUPALYTICS['ENDPOINT'] is plain http on a remote host: the API key would "
                "travel unencrypted.",
                hint="Use https, or a loopback address for a local receiver.",
                id="supalytics.W004",
            )
        )
    for name, minimum in NUMBERS.items():
        value = raw.get(name, DEFAULTS[name])
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            errors.append(
                Error(
                    f"SUPALYTICS['{name}'] must be a number of at least {minimum}, not {value!r}.",
                    id="supalytics.E004",
                )
            )
    key = conf.API_KEY
    if key is not None and (not isinstance(key, str) or not key.strip() or key != key.strip()):
        errors.append(
            Error(
                "SUPALYTICS['API_KEY'] must be a non-empty string without surrounding spaces.",
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
    elif caches[alias].get("BACKEND", PER_PROCESS_CACHES[0]) in PER_PROCESS_CACHES:
        errors.append(
            Warning(
                f"The cache {alias!r} that holds the rate limiter is per-process: each worker "
                "process would send at the full rate on its own.",
                hint="Use a Redis cache (django.core.cache.backends.redis.RedisCache) in "
                "production.",
                id="supalytics.W002",
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
                id="supalytics.E012",
            )
        )
    errors.extend(_check_user_field(raw.get("USER_FIELD")))
    return errors


@register(Tags.database)
def check_database(
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
                    id="supalytics.E011",
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
    max_length = getattr(model_field, "max_length", None)
    if max_length is not None and max_length < 128:
        return [
            Error(
                f"{model._meta.label}.{field} holds {max_length} characters; "
                "a visitor ID may have 128.",
                id="supalytics.E009",
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
