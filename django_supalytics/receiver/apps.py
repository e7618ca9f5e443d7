from __future__ import annotations

from django.apps import AppConfig


class ReceiverConfig(AppConfig):
    name = "django_supalytics.receiver"
    label = "supalytics_receiver"
    verbose_name = "Supalytics mock receiver"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401
