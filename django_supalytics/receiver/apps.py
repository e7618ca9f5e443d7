from __future__ import annotations

from django.apps import AppConfig


class ReceiverConfig(AppConfig):
    name = "django_supalytics.receiver"
    label = "supalytics_receiver"
    verbose_name = "Supalytics mock receiver"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from importlib.util import find_spec

        from ..exceptions import SupalyticsConfigError

        if find_spec("rest_framework") is None:
            raise SupalyticsConfigError(
                "django_supalytics.receiver needs Django REST framework: "
                "pip install 'django-supalytics[receiver]' (and add 'rest_framework' to "
                "INSTALLED_APPS)."
            )
        from . import checks  # noqa: F401
