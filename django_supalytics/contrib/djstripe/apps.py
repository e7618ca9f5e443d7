from __future__ import annotations

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured


class SupalyticsDjstripeConfig(AppConfig):
    name = "django_supalytics.contrib.djstripe"
    label = "supalytics_djstripe"
    verbose_name = "Supalytics for dj-stripe"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)

        try:
            from djstripe.signals import WEBHOOK_SIGNALS
        except ImportError as exc:
            raise ImproperlyConfigured(
                "django_supalytics.contrib.djstripe needs dj-stripe: "
                'pip install "django-supalytics[djstripe]"'
            ) from exc
        from .mapping import MAPPERS
        from .receivers import on_stripe_event

        for event_type in MAPPERS:
            WEBHOOK_SIGNALS[event_type].connect(
                on_stripe_event, dispatch_uid=f"django_supalytics.djstripe:{event_type}"
            )
