"""Signal handlers: link the visitor ID at login."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

from .identity import link_visitor


@receiver(user_logged_in, dispatch_uid="django_supalytics.link_on_login")
def link_on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    state = getattr(request, "supalytics", None)
    if state is not None and state.visitor_id:
        link_visitor(user, state.visitor_id)
        state.mark_linked(user)
