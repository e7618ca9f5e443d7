"""``settings.SUPALYTICS_DJSTRIPE``, read on each use (``docs/settings.md``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.utils.module_loading import import_string

from ...conf import SettingsView

#: What happened, and the name of the event tracked for it (``None``: not tracked).
DEFAULT_EVENTS: dict[str, str | None] = {
    "created": "subscription_created",
    "upgraded": "subscription_upgraded",
    "downgraded": "subscription_downgraded",
    "cancelled": "subscription_cancelled",
    "reactivated": "subscription_reactivated",
    "payment_succeeded": "payment_succeeded",
    "payment_failed": "payment_failed",
}

DEFAULTS: dict[str, Any] = {
    "EVENTS": DEFAULT_EVENTS,
    "METADATA": None,
}

#: ``METADATA`` as a function: ``(metadata, *, kind, stripe_object, event) -> metadata``.
MetadataHook = Callable[..., Mapping[str, Any]]


class DjstripeSettings(SettingsView):
    """Typed view of ``settings.SUPALYTICS_DJSTRIPE``; each attribute is read on access."""

    setting = "SUPALYTICS_DJSTRIPE"
    defaults = DEFAULTS

    @property
    def EVENTS(self) -> dict[str, str | None]:
        """The default names, with those the project set in their place."""
        return {**DEFAULT_EVENTS, **(self._get("EVENTS") or {})}

    @property
    def METADATA(self) -> MetadataHook | dict[str, str | None] | None:
        """A function that returns the metadata to send, a dict renaming (or, to ``None``,
        dropping) keys, or ``None`` to send the metadata as built."""
        value = self._get("METADATA")
        if isinstance(value, str):
            return import_string(value)  # type: ignore[no-any-return]
        return value  # type: ignore[no-any-return]


conf = DjstripeSettings()
