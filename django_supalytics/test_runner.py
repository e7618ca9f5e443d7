"""Django's test runner, hermetic for django-supalytics: ``TEST_RUNNER =
"django_supalytics.test_runner.DiscoverRunner"``.

As Django's runner swaps in the locmem email backend, this one runs the tests with
``SUPALYTICS["DELIVERY_BACKEND"] = "locmem"``: a committed ``track()`` is recorded in
``django_supalytics.backends.locmem.outbox`` and reaches no broker, no worker, no network. A
test that wants the project's backend overrides ``SUPALYTICS`` itself
(``@override_settings(SUPALYTICS={..., "DELIVERY_BACKEND": "celery"})``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.test import override_settings
from django.test.runner import DiscoverRunner as DjangoDiscoverRunner


class HermeticMixin:
    """``setup_test_environment`` with ``DELIVERY_BACKEND = "locmem"``; for your own runner."""

    _supalytics_override: override_settings | None = None

    def setup_test_environment(self, **kwargs: Any) -> None:
        super().setup_test_environment(**kwargs)  # type: ignore[misc]
        from .backends import locmem

        raw = getattr(settings, "SUPALYTICS", {})
        self._supalytics_override = override_settings(
            SUPALYTICS={**(raw if isinstance(raw, dict) else {}), "DELIVERY_BACKEND": "locmem"}
        )
        self._supalytics_override.enable()
        locmem.outbox.clear()

    def teardown_test_environment(self, **kwargs: Any) -> None:
        if self._supalytics_override is not None:
            self._supalytics_override.disable()
            self._supalytics_override = None
        super().teardown_test_environment(**kwargs)  # type: ignore[misc]


class DiscoverRunner(HermeticMixin, DjangoDiscoverRunner):
    """Django's ``DiscoverRunner``, with every test's delivery going to ``"locmem"``."""
