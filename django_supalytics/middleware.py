"""``VisitorIdMiddleware``: ``request.supalytics``, and the visitor ID stored on the user."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase

from .conf import conf
from .validation import is_valid_visitor_id

logger = logging.getLogger("django_supalytics")

#: Session key remembering ``[user pk, visitor ID, Unix time]`` of this session's last link.
SESSION_KEY = "_supalytics_linked_vid"
#: With ``ATTRIBUTION = "last"``, a session replaces the stored ID at most this often, so a
#: client that varies its visitor ID cannot make every request write.
RELINK_INTERVAL = 60.0


class SupalyticsDetails:
    """``request.supalytics``: the visitor ID of this request, read on first use."""

    def __init__(self, request: HttpRequest) -> None:
        self.request = request

    @cached_property
    def _found(self) -> tuple[str | None, str | None]:
        for source in conf.SOURCE_ORDER:
            if source == "header":
                value = self.request.headers.get(conf.HEADER_NAME)
            else:
                value = self.request.COOKIES.get(conf.COOKIE_NAME)
            if value is None:
                continue
            if is_valid_visitor_id(value):
                return value, source
            # Never log the value itself: it is an identifier, and it may be hostile.
            logger.debug("supalytics: ignored an invalid visitor ID from the %s", source)
        return None, None

    @property
    def visitor_id(self) -> str | None:
        """The visitor ID, or None when the request carries no valid one."""
        return self._found[0]

    @property
    def source(self) -> str | None:
        """``"header"`` or ``"cookie"``: where the visitor ID came from."""
        return self._found[1]

    def track(self, name: str, **kwargs: Any) -> Any:
        """``track(name, request=request, ...)``."""
        from .tracking import track

        return track(name, request=self.request, **kwargs)

    async def atrack(self, name: str, **kwargs: Any) -> Any:
        """``await atrack(name, request=request, ...)``, for async views."""
        from .tracking import atrack

        return await atrack(name, request=self.request, **kwargs)

    def mark_linked(self, user: Any) -> None:
        session = getattr(self.request, "session", None)
        if session is not None and self.visitor_id:
            session[SESSION_KEY] = [str(user.pk), self.visitor_id, int(time.time())]

    def _linked_already(self, user: Any, visitor_id: str) -> bool:
        """True when this session needs no look-up: nothing can have changed since its link."""
        session = getattr(self.request, "session", None)
        remembered = session.get(SESSION_KEY) if session is not None else None
        if not isinstance(remembered, list) or len(remembered) < 2:
            return False
        if remembered[0] != str(user.pk):
            return False
        if remembered[1] == visitor_id:
            return True
        if conf.ATTRIBUTION != "last":
            # First touch: once linked, the user keeps its ID whatever this session sends.
            return True
        when = remembered[2] if len(remembered) > 2 else 0
        return isinstance(when, int | float) and time.time() - when < RELINK_INTERVAL

    def link_user(self) -> None:
        """Store the visitor ID on the logged-in user, unless this session already did."""
        visitor_id = self.visitor_id
        if not visitor_id:
            return
        user = getattr(self.request, "user", None)
        if user is None or not user.is_authenticated:
            return
        if self._linked_already(user, visitor_id):
            return
        from .identity import link_visitor

        link_visitor(user, visitor_id)
        self.mark_linked(user)

    def __repr__(self) -> str:
        # Never the ID itself: reprs end up on debug pages and in error trackers.
        state = "set" if self.visitor_id else "none"
        return f"<SupalyticsDetails visitor_id={state} source={self.source!r}>"


class VisitorIdMiddleware:
    """Attach ``request.supalytics``; link its visitor ID to the authenticated user."""

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        details = SupalyticsDetails(request)
        request.supalytics = details  # type: ignore[attr-defined]
        if details.visitor_id:
            details.link_user()
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        details = SupalyticsDetails(request)
        request.supalytics = details  # type: ignore[attr-defined]
        if details.visitor_id:
            await sync_to_async(details.link_user)()
        return await self.get_response(request)  # type: ignore[misc, no-any-return]
