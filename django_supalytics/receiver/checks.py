"""System checks of the mock receiver."""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from ..checks.caches import PER_PROCESS_CACHES
from .conf import conf

#: A day: enough for any skew worth testing, and a typo like 3.6e9 is refused.
CLOCK_OFFSET_MAX = 86400


RECEIVER_URLCONF = "django_supalytics.receiver.urls"


def _mounted() -> bool:
    """Whether the project serves the receiver's urls: ``ROOT_URLCONF`` is them, or includes
    them. Tests' ``supalytics_receiver`` fixture serves them itself, with keys of its own."""
    from django.urls import NoReverseMatch, reverse

    if getattr(settings, "ROOT_URLCONF", None) == RECEIVER_URLCONF:
        return True
    try:
        reverse("supalytics_receiver:events")
    except NoReverseMatch:
        return False
    except Exception:  # a broken urlconf: Django's own url checks report it
        return True
    return True


@register(Tags.compatibility)
def check_receiver(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    raw = getattr(settings, "SUPALYTICS_RECEIVER", {})
    if not isinstance(raw, dict):
        return [Error("SUPALYTICS_RECEIVER must be a dict.", id="supalytics.E101")]
    from .conf import DEFAULTS

    unknown = sorted(map(str, set(raw) - set(DEFAULTS)))
    if unknown:
        messages.append(
            Error(
                f"SUPALYTICS_RECEIVER has unknown keys: {', '.join(unknown)}.",
                hint="See docs/settings.md for the keys there are.",
                id="supalytics.E105",
            )
        )
    keys = raw.get("API_KEYS", [])
    if not isinstance(keys, list | tuple) or not all(isinstance(k, str) and k for k in keys):
        messages.append(
            Error(
                "SUPALYTICS_RECEIVER['API_KEYS'] must be a list of strings.", id="supalytics.E102"
            )
        )
    elif not keys and _mounted():
        messages.append(
            Warning(
                "The mock receiver has no API keys: it refuses every request with 401.",
                hint="Set SUPALYTICS_RECEIVER = {'API_KEYS': ['sly_test_...']}.",
                id="supalytics.W101",
            )
        )
    limit = raw.get("RATE_LIMIT", 100)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        messages.append(
            Error(
                "SUPALYTICS_RECEIVER['RATE_LIMIT'] must be a whole number of at least 1.",
                id="supalytics.E103",
            )
        )
    offset = raw.get("CLOCK_OFFSET", 0.0)
    if (
        isinstance(offset, bool)
        or not isinstance(offset, int | float)
        or not math.isfinite(offset)
        or abs(offset) > CLOCK_OFFSET_MAX
    ):
        messages.append(
            Error(
                "SUPALYTICS_RECEIVER['CLOCK_OFFSET'] must be a number of seconds between "
                f"-{CLOCK_OFFSET_MAX} and {CLOCK_OFFSET_MAX}.",
                id="supalytics.E106",
            )
        )
    caches = getattr(settings, "CACHES", {})
    alias = conf.CACHE_ALIAS
    if alias not in caches:
        messages.append(
            Error(
                f"SUPALYTICS_RECEIVER['CACHE_ALIAS'] {alias!r} is not in CACHES.",
                id="supalytics.E104",
            )
        )
    elif caches[alias].get("BACKEND") in PER_PROCESS_CACHES:
        messages.append(
            Warning(
                "The mock receiver counts its rate limit in a per-process cache: several "
                "receiver processes would each allow the full rate.",
                hint="Use a Redis cache when running more than one receiver process.",
                id="supalytics.W102",
            )
        )
    if conf.CONTROL and not settings.DEBUG:
        messages.append(
            Warning(
                "The mock receiver's HTTP control endpoint is on while DEBUG is False.",
                hint="Anyone who can reach it can change the receiver's answers.",
                id="supalytics.W103",
            )
        )
    return messages
