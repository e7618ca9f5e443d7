"""Signal handlers: link the visitor ID at login; forget it when the user is deleted."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import pre_delete
from django.dispatch import receiver

from .forgetting import forget_user
from .identity import link_request_visitor


@receiver(user_logged_in, dispatch_uid="django_supalytics.link_on_login")
def link_on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    link_request_visitor(request, user)


@receiver(pre_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="django_supalytics.forget_user")
def forget_on_user_delete(sender: Any, instance: Any, **kwargs: Any) -> None:
    forget_user(instance)
