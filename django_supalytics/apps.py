from __future__ import annotations

from django.apps import AppConfig


class SupalyticsConfig(AppConfig):
    name = "django_supalytics"
    verbose_name = "Supalytics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, handlers  # noqa: F401  (registers checks and signal handlers)

        try:  # the [prometheus] extra: our metrics in its default registry, read at scrape time
            from .prometheus import register
        except ImportError:
            return
        register()
