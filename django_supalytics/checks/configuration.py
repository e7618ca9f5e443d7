"""Checks of the ``SUPALYTICS`` setting itself: its keys, values, endpoint, cache and backend."""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from ..client import api_key_problem
from ..conf import DEFAULTS, conf
from .caches import limiter_cache_errors
from .project import user_field_errors

NUMBERS = {
    "RATE_LIMIT": 1.0,
    "REQUEST_TIMEOUT": 0.001,
    "MAX_ATTEMPTS": 1,
    "BACKOFF_BASE": 0.001,
    "BACKOFF_MAX": 0.001,
    "OUTAGE_PROBE_MAX": 0.001,
    "MAX_COUNTDOWN": 0.0,
    "LEASE_SECONDS": 1.0,
    "SWEEP_GRACE": 0.0,
    "BATCH_SIZE": 1,
    "SEND_CONCURRENCY": 1,
    "RETENTION_DAYS": 0.0,
    "HEALTH_MAX_LAG": 1.0,
}
#: Keys that were replaced, and by what (named in E002's hint).
REPLACED = {
    "CONNECT_TIMEOUT": "REQUEST_TIMEOUT",
    "READ_TIMEOUT": "REQUEST_TIMEOUT",
    "OUTAGE_THRESHOLD": "a fixed 3 failures in a row",
    "OUTAGE_PROBE_BASE": "a fixed 1 s (OUTAGE_PROBE_MAX bounds it)",
    "RATE_LIMIT_WAIT_MAX": "a fixed 60 s",
    "PURGE_BATCH_SIZE": "a fixed 1,000 rows per DELETE (supalytics_purge)",
}
#: An HTTP token (RFC 9110, section 5.6.2): what a header or cookie name may be made of.
HTTP_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "testserver"}


def _is_loopback(host: str) -> bool:
    """A loopback address (by ``ipaddress``, so ``127.attacker.example`` is not one), or exactly
    ``localhost`` / ``*.localhost`` / ``testserver``."""
    name = host.lower().rstrip(".")
    if name in LOOPBACK_HOSTS or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


@register(Tags.security)
def check_endpoint_security(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    raw = conf.raw
    endpoint = raw.get("ENDPOINT", DEFAULTS["ENDPOINT"]) if isinstance(raw, dict) else None
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
        replaced = [f"{key} by {REPLACED[key]}" for key in unknown if key in REPLACED]
        errors.append(
            Error(
                f"SUPALYTICS has unknown keys: {', '.join(map(str, unknown))}.",
                hint=(f"Replaced: {', '.join(replaced)}. " if replaced else "")
                + "See docs/settings.md for the keys there are.",
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
        errors.extend(limiter_cache_errors(alias, str(caches[alias].get("BACKEND", ""))))
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
    max_age = raw.get("MAX_AGE", DEFAULTS["MAX_AGE"])
    if not isinstance(max_age, dict) or not all(
        isinstance(name, str)
        and not isinstance(age, bool)
        and isinstance(age, int | float)
        and math.isfinite(age)
        and age > 0
        for name, age in max_age.items()
    ):
        errors.append(
            Error(
                f"SUPALYTICS['MAX_AGE'] must map event names to seconds (> 0), not {max_age!r}.",
                hint='For example {"page_viewed": 86400}: such rows a day old are not sent.',
                id="supalytics.E022",
            )
        )
    token = raw.get("METRICS_TOKEN")
    if token is not None and (not isinstance(token, str) or not token.strip()):
        errors.append(
            Error(
                "SUPALYTICS['METRICS_TOKEN'] must be a non-empty string or None.",
                hint="A scraper sends it as 'Authorization: Bearer <token>' to metrics/.",
                id="supalytics.E023",
            )
        )
    suppression, gpc = raw.get("SUPPRESSION", "off"), raw.get("HONOR_GPC", False)
    if suppression not in ("off", "anonymize", "drop") or not isinstance(gpc, bool):
        text = f"'off', 'anonymize' or 'drop' and HONOR_GPC a bool, not {suppression!r}, {gpc!r}"
        errors.append(Error(f"SUPALYTICS['SUPPRESSION'] must be {text}.", id="supalytics.E024"))
    errors.extend(user_field_errors(raw.get("USER_FIELD")))
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


@register(Tags.compatibility)
def check_delivery_backend(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E016: DELIVERY_BACKEND names no backend; else the backend's own checks."""
    from django.core.exceptions import ImproperlyConfigured

    from ..backends import backend_class

    try:
        backend = backend_class(conf.DELIVERY_BACKEND)()
    except ImproperlyConfigured as exc:
        return [
            Error(
                str(exc),
                hint="An alias ('celery', 'django_tasks', 'cron', 'locmem') or the dotted "
                "path of a subclass of django_supalytics.backends.BaseDeliveryBackend.",
                id="supalytics.E016",
            )
        ]
    return backend.check()
