"""Signal handlers: link the visitor ID at login."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

from .identity import link_visitor


@receiver(user_logged_in, dispatch_uid="django_supalytics.link_on_login")
def link_on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    state = getattr(request, "supalytics", None)
    visitor_id = state.visitor_id if state is not None else None
    if visitor_id:
        link_visitor(user, visitor_id)
        state.mark_linked(user)
