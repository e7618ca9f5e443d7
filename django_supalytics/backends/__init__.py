"""What hands committed outbox rows to a worker: ``SUPALYTICS["DELIVERY_BACKEND"]``, an alias
or the dotted path of a ``BaseDeliveryBackend`` subclass, as ``EMAIL_BACKEND`` is for mail."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .. import state
from ..conf import conf
from .base import BaseDeliveryBackend

__all__ = ["ALIASES", "BaseDeliveryBackend", "backend_class", "get_backend"]

ALIASES = {
    "celery": "django_supalytics.backends.celery.CeleryBackend",
    "django_tasks": "django_supalytics.backends.django_tasks.DjangoTasksBackend",
    "cron": "django_supalytics.backends.cron.CronBackend",
    "none": "django_supalytics.backends.cron.CronBackend",  # the old name of "cron"
    "locmem": "django_supalytics.backends.locmem.LocmemBackend",
}


def backend_class(name: str) -> type[BaseDeliveryBackend]:
    """The class that ``name``, an alias or a dotted path, stands for; ``ImproperlyConfigured``
    (with the reason) if none."""
    path = ALIASES.get(name, name)
    setting = f"SUPALYTICS['DELIVERY_BACKEND'] is {name!r}"
    if "." not in path:
        aliases = ", ".join(map(repr, ALIASES))
        raise ImproperlyConfigured(f"{setting}: not one of {aliases}, nor a dotted path.")
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"{setting}, which cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, BaseDeliveryBackend)):
        raise ImproperlyConfigured(
            f"{setting}, which is not a subclass of django_supalytics.backends.BaseDeliveryBackend."
        )
    return cls


def get_backend() -> BaseDeliveryBackend:
    """The process's delivery backend, made on first use and again after ``SUPALYTICS``
    changes (``override_settings``): kept in ``state``."""
    process = state.current()
    if process.backend is None:
        process.backend = backend_class(conf.DELIVERY_BACKEND)()
    backend: BaseDeliveryBackend = process.backend
    return backend
