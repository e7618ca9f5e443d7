"""Server-side Supalytics events for Django.

``track()`` records an event in the caller's transaction; Celery delivers it after commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .exceptions import InvalidEvent

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .forgetting import forget_visitor, suppress_visitor, unsuppress_visitor
    from .identity import get_visitor_id, link_visitor
    from .tracking import atrack, track

__all__ = [
    "InvalidEvent",
    "__version__",
    "atrack",
    "forget_visitor",
    "get_visitor_id",
    "link_visitor",
    "suppress_visitor",
    "track",
    "unsuppress_visitor",
]

_LAZY = {
    "track": "tracking",
    "atrack": "tracking",
    "get_visitor_id": "identity",
    "forget_visitor": "forgetting",
    "link_visitor": "identity",
    "suppress_visitor": "forgetting",
    "unsuppress_visitor": "forgetting",
}


def __getattr__(name: str) -> Any:
    # Imported on first use: these need the app registry, and importing the package (from
    # settings, or for __version__) must not.
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
