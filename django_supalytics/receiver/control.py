"""HTTP control of the mock (faults, reset, received events), when ``CONTROL`` is on.

Off by default: it lets anyone who can reach the receiver change its answers.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import faults, stats
from .conf import conf
from .models import ReceivedEvent
from .views import error


class ControlView(APIView):
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes: list[Any] = []
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        if not conf.CONTROL:
            raise Http404("the receiver's control endpoint is off")
        super().initial(request, *args, **kwargs)


class FaultsView(ControlView):
    def get(self, request: Request) -> Response:
        return Response(faults.state())

    def post(self, request: Request) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        allowed = {"status", "count", "fraction", "delay", "drop", "api_key", "seconds"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            return error(400, "unknown_field", f"unknown fields: {', '.join(unknown)}")
        try:
            fault = faults.inject(**data)
        except (TypeError, ValueError) as exc:
            return error(400, "invalid_fault", str(exc))
        return Response({"success": True, "id": fault.id}, status=201)

    def delete(self, request: Request) -> Response:
        faults.reset()
        return Response({"success": True})


class ResetView(ControlView):
    def post(self, request: Request) -> Response:
        received = (
            bool(request.data.get("received", True)) if isinstance(request.data, dict) else True
        )
        faults.reset(received=received)
        return Response({"success": True})


class StatsView(ControlView):
    def get(self, request: Request) -> Response:
        return Response(stats.read())


class ReceivedView(ControlView):
    def get(self, request: Request) -> Response:
        rows = ReceivedEvent.objects.order_by("id").values(
            "name", "visitor_id", "metadata", "idempotency_key", "key_prefix", "received_at"
        )
        return Response({"count": len(rows), "events": list(rows)})
