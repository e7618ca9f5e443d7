"""Exceptions raised by django-supalytics."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class SupalyticsError(Exception):
    """Base class of every exception this package raises."""


class InvalidEvent(SupalyticsError, ValueError):
    """An event that the Supalytics API would refuse.

    ``field`` names the offending field (``name``, ``visitor_id``, ``metadata`` or a top-level
    field), ``code`` is the API's error code for it (``invalid_name``, ...).
    """

    def __init__(self, field: str, message: str, *, code: str | None = None) -> None:
        super().__init__(f"{field} {message}")
        self.field = field
        self.message = message
        self.code = code or f"invalid_{field}"


class SupalyticsConfigError(SupalyticsError, ImproperlyConfigured):
    """The ``SUPALYTICS`` setting cannot be used as it is."""
