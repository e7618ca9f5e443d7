"""``VisitorIdMiddleware``: ``request.supalytics``, and the visitor ID stored on the user."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase

from .conf import conf
from .identity import _linked_already, is_authenticated, link_request_visitor
from .validation import is_valid_visitor_id

logger = logging.getLogger("django_supalytics")


class SupalyticsDetails:
    """``request.supalytics``: the visitor ID of this request, read on first use.

    A pure read of the request's cookie and header: storing the ID on the user is
    ``identity.link_request_visitor``, which the middleware calls."""

    def __init__(self, request: HttpRequest) -> None:
        self.request = request

    @cached_property
    def gpc(self) -> bool:
        """The request sends ``Sec-GPC: 1`` and ``HONOR_GPC`` is on: it is treated as from a
        suppressed visitor (no visitor ID; ``track()`` anonymizes or drops its events)."""
        return conf.HONOR_GPC and self.request.headers.get("Sec-GPC", "").strip() == "1"

    @cached_property
    def _found(self) -> tuple[str | None, str | None]:
        if self.gpc:
            return None, None
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

    def __repr__(self) -> str:
        # Never the ID itself: reprs end up on debug pages and in error trackers.
        state = "set" if self.visitor_id else "none"
        gpc = " gpc" if self.gpc else ""
        return f"<SupalyticsDetails visitor_id={state} source={self.source!r}{gpc}>"


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
            _link(request, details.visitor_id)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        details = SupalyticsDetails(request)
        request.supalytics = details  # type: ignore[attr-defined]
        if details.visitor_id:
            await sync_to_async(_link)(request, details.visitor_id)
        return await self.get_response(request)  # type: ignore[misc, no-any-return]


def _link(request: HttpRequest, visitor_id: str) -> None:
    """``link_request_visitor``, unless the ID is suppressed: looked up only when a link is
    due (a logged-in user whose session has not linked it), so most requests cost no query."""
    user = getattr(request, "user", None)
    if not is_authenticated(user) or _linked_already(
        getattr(request, "session", None), user, visitor_id
    ):
        return
    from .forgetting import is_suppressed

    if conf.SUPPRESSION == "off" or not is_suppressed(visitor_id):
        link_request_visitor(request)
