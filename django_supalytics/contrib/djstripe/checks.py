"""System checks of the dj-stripe integration (``docs/settings.md``, IDs ``supalytics.E2xx``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.apps import apps
from django.core.checks import CheckMessage, Error, Tags, register
from django.utils.module_loading import import_string

from ...validation import NAME_RE
from .conf import DEFAULT_EVENTS, DEFAULTS, conf


@register(Tags.compatibility)
def check_djstripe_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    raw = conf.raw
    if not isinstance(raw, dict):
        return [Error("SUPALYTICS_DJSTRIPE must be a dict.", id="supalytics.E201")]
    errors: list[CheckMessage] = []
    unknown = sorted(map(str, set(raw) - set(DEFAULTS)))
    if unknown:
        errors.append(
            Error(
                f"SUPALYTICS_DJSTRIPE has unknown keys: {', '.join(unknown)}.",
                hint="See docs/settings.md for the keys there are.",
                id="supalytics.E202",
            )
        )
    errors.extend(_check_events(raw.get("EVENTS", DEFAULTS["EVENTS"])))
    errors.extend(_check_metadata(raw.get("METADATA", DEFAULTS["METADATA"])))
    return errors


def _check_events(events: Any) -> list[CheckMessage]:
    if events is None:
        return []
    if not isinstance(events, Mapping):
        problems = ["must be a dict"]
    else:
        problems = [
            f"has no kind {kind!r}"
            for kind in sorted(map(str, events))
            if kind not in DEFAULT_EVENTS
        ]
        problems += [
            f"{kind!r}: {name!r} is not an event name"
            for kind, name in events.items()
            if name is not None and not (isinstance(name, str) and NAME_RE.fullmatch(name))
        ]
    if not problems:
        return []
    return [
        Error(
            f"SUPALYTICS_DJSTRIPE['EVENTS'] {'; '.join(problems)}.",
            hint=f"Its keys are {', '.join(DEFAULT_EVENTS)}; each value is an event name "
            "(lowercase letters, digits, _ and -, at most 64) or None to track nothing.",
            id="supalytics.E203",
        )
    ]


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _check_metadata(value: Any) -> list[CheckMessage]:
    if value is None or callable(value):
        return []
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and (v is None or _nonempty(v)) for k, v in value.items()):
            return []
        problem = "as a dict must map metadata keys to new keys (or None to drop them)"
    elif isinstance(value, str):
        try:
            hook = import_string(value)
        except ImportError as exc:
            problem = f"{value!r} cannot be imported ({exc})"
        else:
            if callable(hook):
                return []
            problem = f"{value!r} is not callable"
    else:
        problem = f"must be a function, its dotted path or a dict, not {type(value).__name__}"
    return [Error(f"SUPALYTICS_DJSTRIPE['METADATA'] {problem}.", id="supalytics.E204")]


@register(Tags.compatibility)
def check_djstripe_installed(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if apps.is_installed("djstripe"):
        return []
    return [
        Error(
            "django_supalytics.contrib.djstripe is in INSTALLED_APPS, but djstripe is not.",
            hint='Add "djstripe" to INSTALLED_APPS (before the integration).',
            id="supalytics.E205",
        )
    ]
