"""HTTP control of the mock (faults, reset, received events), when ``CONTROL`` is on.

Off by default: it lets anyone who can reach the receiver change its answers and delete what
it received. When on, it still refuses what a web page in a browser could send: a request from
another origin (``Origin`` or ``Sec-Fetch-Site`` says so), and a change whose body is not
declared ``application/json`` (so a cross-origin "simple" form or ``fetch`` POST cannot reach
it without a CORS preflight, which the receiver never grants). With ``CONTROL_TOKEN`` set, every
control request must also carry ``Authorization: Bearer <token>``; without one, only a request
whose ``Host`` (and ``Origin``, if any) is a loopback name or address, or a name
``ALLOWED_HOSTS`` gives (``*`` does not count), is served: a DNS-rebinding page is refused.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http import Http404
from django.http.request import split_domain_port, validate_host
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import faults, stats
from .conf import conf
from .models import ReceivedEvent
from .server import is_loopback
from .views import _bearer, content_length, error

#: Control bodies are small: a fault rule, a reset flag.
CONTROL_BODY_MAX_BYTES = 16 * 1024
#: Received events listed per page (``?limit=``, ``?after=``).
PAGE_MAX = 1000
_UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
_CODES = {
    400: "invalid_json",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class SafeJSONParser(JSONParser):
    """DRF's parser, with nesting too deep for Python's parser as a 400, not a 500."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None


def _trusted_host(host: str) -> bool:
    """A loopback name or address, or one ``ALLOWED_HOSTS`` names (``*`` does not count)."""
    domain, _port = split_domain_port(host)
    if not domain:
        return False
    if is_loopback(domain):
        return True
    named = [name for name in settings.ALLOWED_HOSTS if name != "*"]
    return validate_host(domain, named)


def _rebound(request: Request) -> str | None:
    """Why a request's ``Host`` or ``Origin`` is not one to trust (DNS rebinding), or None."""
    try:
        host = request._request.get_host()
    except Exception:  # DisallowedHost: Django answers it before a view, but be safe
        return "the Host is not allowed"
    if not _trusted_host(host):
        return f"control requests need a loopback Host or one in ALLOWED_HOSTS, not {host!r}"
    origin = request.headers.get("Origin", "").strip()
    if origin and origin != "null":
        try:
            netloc = urlsplit(origin).netloc.lower()
        except ValueError:
            netloc = ""
        if not _trusted_host(netloc):
            return "control requests need a loopback Origin or one in ALLOWED_HOSTS"
    return None


def _cross_origin(request: Request) -> bool:
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if site in ("cross-site", "same-site"):
        return True
    origin = request.headers.get("Origin", "").strip()
    if not origin:
        return False
    if origin == "null":
        return True
    try:
        return urlsplit(origin).netloc.lower() != request._request.get_host().lower()
    except ValueError:
        return True


class ControlView(APIView):
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes: list[Any] = []
    parser_classes = [SafeJSONParser]
    renderer_classes = [JSONRenderer]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        if not conf.CONTROL:
            raise Http404("the receiver's control endpoint is off")
        token = conf.CONTROL_TOKEN
        if token is not None:
            given = _bearer(request.headers.get("Authorization", "")) or ""
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise _Refused(error(403, "forbidden", "send Authorization: Bearer <token>"))
        else:
            # With ALLOWED_HOSTS = ["*"] any name reaches the view: a page whose name was
            # rebound to 127.0.0.1 would be same-origin. Only a token makes another name safe.
            problem = _rebound(request)
            if problem:
                raise _Refused(
                    error(403, "forbidden", f"{problem}; or set CONTROL_TOKEN and send it")
                )
        if _cross_origin(request):
            raise _Refused(error(403, "forbidden", "cross-origin control requests are refused"))
        if request.method in _UNSAFE:
            kind = request.content_type.split(";")[0].strip().lower()
            if kind != "application/json":
                raise _Refused(
                    error(415, "unsupported_media_type", "send Content-Type: application/json")
                )
            length = content_length(request)
            if length is None:
                raise _Refused(
                    error(400, "invalid_content_length", "Content-Length is not a number")
                )
            if length > CONTROL_BODY_MAX_BYTES:
                raise _Refused(error(413, "payload_too_large", "the body is too large"))
        super().initial(request, *args, **kwargs)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, _Refused):
            return exc.response
        if isinstance(exc, APIException) and not isinstance(exc, ParseError | Http404):
            status = exc.status_code
            return error(status, _CODES.get(status, "invalid_request"), str(exc.detail))
        if isinstance(exc, ParseError):
            return error(400, "invalid_json", str(exc.detail))
        return super().handle_exception(exc)

    def options(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        return error(405, "method_not_allowed", "OPTIONS is not allowed")

    def body(self, request: Request) -> dict[str, Any]:
        data: Any = request.data  # {} for an empty body
        if not isinstance(data, dict):
            raise _Refused(error(400, "invalid_json", "the body must be a JSON object"))
        return data


class FaultsView(ControlView):
    def get(self, request: Request) -> Response:
        return Response(faults.state())

    def post(self, request: Request) -> Response:
        data = self.body(request)
        allowed = {"status", "count", "fraction", "delay", "drop", "api_key", "seconds"}
        unknown = sorted(map(str, set(data) - allowed))
        if unknown:
            return error(400, "unknown_field", f"unknown fields: {', '.join(unknown)}")
        try:
            fault = faults.inject(**data)
        except (TypeError, ValueError) as exc:
            return error(400, "invalid_fault", str(exc))
        return Response({"success": True, "id": fault.id}, status=201)

    def delete(self, request: Request) -> Response:
        faults.reset(received=False)
        return Response({"success": True})


class ResetView(ControlView):
    def post(self, request: Request) -> Response:
        received = self.body(request).get("received", True)
        if not isinstance(received, bool):
            return error(400, "invalid_json", "received must be true or false")
        faults.reset(received=received)
        return Response({"success": True})


class StatsView(ControlView):
    def get(self, request: Request) -> Response:
        return Response(stats.read())


def _whole(value: str | None, default: int, name: str) -> int:
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise _Refused(error(400, "invalid_query", f"{name} must be a whole number"))
    return int(value)


class ReceivedView(ControlView):
    """Received events, oldest first, a page at a time: ``?after=<id>&limit=<n>`` (at most
    1000); ``next`` is the ``after`` of the next page, or null."""

    def get(self, request: Request) -> Response:
        after = _whole(request.query_params.get("after"), 0, "after")
        limit = min(max(_whole(request.query_params.get("limit"), PAGE_MAX, "limit"), 1), PAGE_MAX)
        rows = list(
            ReceivedEvent.objects.filter(pk__gt=after)
            .order_by("id")
            .values(
                "id",
                "name",
                "visitor_id",
                "metadata",
                "idempotency_key",
                "key_prefix",
                "received_at",
            )[: limit + 1]
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Response(
            {
                "count": ReceivedEvent.objects.count(),
                "events": rows,
                "next": rows[-1]["id"] if more else None,
            }
        )
