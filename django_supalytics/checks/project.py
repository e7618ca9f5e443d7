"""Checks of the project around the app: the outbox's databases, the user model, MIDDLEWARE."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import connections

#: Field names that hold secrets or account data, never a visitor ID or metadata to send.
SENSITIVE_NAME_RE = re.compile(
    r"password|passwd|secret|token|api_?key|salt|otp|^is_|^last_login$|^date_joined$", re.I
)


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
    from ..models import outbox_aliases

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


def user_field_errors(field: Any) -> list[CheckMessage]:
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


def _first(middleware: list[str], base: str) -> int | None:
    """Where the first entry of ``middleware`` that is ``base`` or a subclass of it stands."""
    from django.utils.module_loading import import_string

    wanted = import_string(base)
    for index, path in enumerate(middleware):
        try:
            found = import_string(path)
        except ImportError:
            continue  # Django's own checks report it
        if found is wanted or (isinstance(found, type) and issubclass(found, wanted)):
            return index
    return None


@register(Tags.compatibility)
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W006: no VisitorIdMiddleware; W007: no AuthenticationMiddleware before it; E010: it
    comes before AuthenticationMiddleware."""
    middleware = list(getattr(settings, "MIDDLEWARE", []) or [])
    ours = _first(middleware, "django_supalytics.middleware.VisitorIdMiddleware")
    auth = _first(middleware, "django.contrib.auth.middleware.AuthenticationMiddleware")
    if ours is None:
        return [
            Warning(
                "VisitorIdMiddleware is not in MIDDLEWARE: track(request=...) stores no "
                "visitor ID and no user gets one, so server-side events go unattributed.",
                hint="Add 'django_supalytics.middleware.VisitorIdMiddleware' to MIDDLEWARE, "
                "after AuthenticationMiddleware; if you always pass visitor_id= yourself, "
                "add 'supalytics.W006' to SILENCED_SYSTEM_CHECKS.",
                id="supalytics.W006",
            )
        ]
    if auth is None:
        return [
            Warning(
                "VisitorIdMiddleware runs without AuthenticationMiddleware: it cannot see "
                "request.user, so the visitor ID is never stored on a user.",
                hint="Add 'django.contrib.auth.middleware.AuthenticationMiddleware' before it.",
                id="supalytics.W007",
            )
        ]
    if ours < auth:
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

    from ..models import OutboxEvent

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
