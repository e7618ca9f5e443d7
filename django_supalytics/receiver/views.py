"""``/v1/events``, answering exactly as ``docs/api-contract.md`` says."""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import socket
import time
from typing import Any

from django.db import IntegrityError, transaction
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..exceptions import InvalidEvent
from ..ratelimit import key_id
from ..validation import BODY_MAX_BYTES, IDEMPOTENCY_KEY_MAX_LENGTH, validate_payload
from . import faults, stats
from .conf import conf
from .models import ReceivedEvent
from .ratelimit import hit

logger = logging.getLogger("django_supalytics.receiver")

_IDEMPOTENCY_KEY_RE = re.compile(rf"[ -~]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}")


def content_length(request: Any) -> int | None:
    """The declared body length: 0 when absent, None when it is not a whole number."""
    raw = str(request.META.get("CONTENT_LENGTH") or "").strip()
    if not raw:
        return 0
    if not (raw.isascii() and raw.isdigit()):
        return None
    if len(raw) > 15:  # far over any limit, and int() refuses 4300 digits and more
        return 10**15
    return int(raw)


def error(
    status: int, code: str, message: str, field: str | None = None, **headers: str
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return Response({"success": False, "error": body}, status=status, headers=headers)


class AlwaysJSON(BaseContentNegotiation):
    """Answer JSON whatever the client accepts: the contract has no 406."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return None

    def select_renderer(
        self, request: Request, renderers: Any, format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        return renderers[0], renderers[0].media_type


class CompactJSON(JSONRenderer):
    # The vendor's documented body is {"success": true}; keep the same separators.
    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> bytes:
        return json.dumps(data, separators=(", ", ": ")).encode()


def _bearer(header: str) -> str | None:
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def _known(token: str) -> bool:
    # Compare against every key, always, so the time taken says nothing about which matched.
    found = False
    for key in conf.API_KEYS:
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


def key_prefix(key: str) -> str:
    """What is kept of an API key: its first 8 characters, never more than half of it (a key
    of 8 keeps 4, a key of 1 nothing)."""
    return key[: min(8, len(key) // 2)]


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def drop_connection(request: Request) -> bool:
    """Shut the client's socket, so it sees the connection drop with no answer.

    Works on servers built on wsgiref (``runserver``, pytest-django's ``live_server``);
    elsewhere returns False and the caller answers 500 instead.
    """
    stream: Any = request._request.META.get("wsgi.input")
    # LimitedStream -> BufferedReader -> SocketIO -> socket
    for _ in range(5):
        if isinstance(stream, socket.socket):
            break
        reader = getattr(stream, "_read", None)
        stream = (
            getattr(reader, "__self__", None)
            or getattr(stream, "stream", None)
            or getattr(stream, "raw", None)
            or getattr(stream, "_sock", None)
        )
    if not isinstance(stream, socket.socket):
        return False
    try:
        stream.shutdown(socket.SHUT_RDWR)
    except OSError:
        return False
    return True


class EventsView(APIView):
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes: list[Any] = []
    parser_classes: list[Any] = []
    renderer_classes = [CompactJSON]
    content_negotiation_class = AlwaysJSON

    @property
    def default_response_headers(self) -> dict[str, str]:
        # DRF would list GET, HEAD and OPTIONS, which this path answers with 405.
        return {"Allow": "POST"}

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        stats.count(str(response.status_code))
        if response.get("Idempotent-Replayed"):
            stats.count("replayed")
        return super().finalize_response(request, response, *args, **kwargs)

    def http_method_not_allowed(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        headers = {"Allow": "POST"}
        token = _bearer(request.headers.get("Authorization", ""))
        if token is not None and _known(token):
            # "Every response to a request with a known key carries the three headers."
            headers.update(hit(key_id(token), faults.state()["generation"]).headers())
        return error(
            405, "method_not_allowed", f"{request.method} is not allowed; use POST", **headers
        )

    def get(self, request: Request) -> Response:
        return self.http_method_not_allowed(request)

    def options(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        # DRF answers OPTIONS with metadata; the contract has POST only.
        return self.http_method_not_allowed(request)

    def post(self, request: Request) -> Response:
        token = _bearer(request.headers.get("Authorization", ""))
        if token is None:
            return error(401, "missing_api_key", "send Authorization: Bearer <API key>")
        if not _known(token):
            return error(401, "invalid_api_key", "the API key is not valid")
        kid = key_id(token)
        current = faults.state()
        window = hit(kid, current["generation"])
        headers = window.headers()
        fault = faults.match(current["faults"], kid) if current["faults"] else None
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop and drop_connection(request):
                return error(500, "injected_fault", "connection dropped")
            if fault.status is not None or fault.drop:
                status = fault.status or 500
                code = "injected_fault"
                if status == 429:
                    # Indistinguishable from a real 429, as the contract writes it.
                    headers["Retry-After"] = "1"
                    code = "rate_limited"
                return error(status, code, f"injected {status}", **headers)
        if not window.allowed:
            retry = max(1, math.ceil(window.reset - conf.now()))
            return error(
                429,
                "rate_limited",
                f"more than {window.limit} requests in one second",
                **headers,
                **{"Retry-After": str(retry)},
            )
        return self._accept(request, token, kid, headers)

    def _accept(self, request: Request, token: str, kid: str, headers: dict[str, str]) -> Response:
        content_type = request.content_type.split(";")[0].strip().lower()
        if content_type != "application/json":
            return error(
                415, "unsupported_media_type", "send Content-Type: application/json", **headers
            )
        length = content_length(request)
        if length is None:
            return error(
                400,
                "invalid_content_length",
                "Content-Length is not a whole number of bytes",
                **headers,
            )
        if length > BODY_MAX_BYTES:
            # Refused before reading a byte of it; the server does not read it either.
            return self._too_large(headers)
        idempotency_key = request.headers.get("Idempotency-Key", "").strip()
        if idempotency_key and not _IDEMPOTENCY_KEY_RE.fullmatch(idempotency_key):
            # Never cut: two long keys sharing a prefix would collide and drop an event.
            return error(
                400,
                "invalid_idempotency_key",
                f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII "
                "characters",
                "Idempotency-Key",
                **headers,
            )
        # At most one byte over the limit is read, whatever the body really holds.
        raw = request._request.read(BODY_MAX_BYTES + 1)
        if len(raw) > BODY_MAX_BYTES:
            return self._too_large(headers)
        try:
            payload = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return error(400, "invalid_json", "the body is not valid JSON", **headers)
        try:
            body = validate_payload(payload)
        except InvalidEvent as exc:
            field = None if exc.code == "invalid_json" else exc.field
            return error(400, exc.code, str(exc), field, **headers)
        event = ReceivedEvent(
            name=body["name"],
            visitor_id=body.get("visitor_id", ""),
            metadata=body.get("metadata", {}),
            idempotency_key=idempotency_key,
            key_id=kid,
            key_prefix=key_prefix(token),
        )
        try:
            # No look-up first: the unique constraint decides, even between processes.
            with transaction.atomic(durable=False):
                event.save(force_insert=True)
        except IntegrityError:
            return self._replayed(headers)
        _trim(event.pk)
        return Response({"success": True}, headers=headers)

    def _too_large(self, headers: dict[str, str]) -> Response:
        return error(
            413, "payload_too_large", f"the body is over {BODY_MAX_BYTES} bytes", **headers
        )

    def _replayed(self, headers: dict[str, str]) -> Response:
        return Response({"success": True}, headers={**headers, "Idempotent-Replayed": "true"})


def _trim(newest_pk: int) -> None:
    """Keep at most ``MAX_EVENTS`` received events: the oldest go (ids only grow)."""
    cap = conf.MAX_EVENTS
    if newest_pk > cap:
        ReceivedEvent.objects.filter(pk__lte=newest_pk - cap).delete()


class OpenAPIView(APIView):
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes: list[Any] = []
    content_negotiation_class = AlwaysJSON

    def get(self, request: Request) -> Response:
        from .openapi import schema

        # A relative server: the Host header is the client's to choose, never echoed back.
        return Response(schema("/"))
