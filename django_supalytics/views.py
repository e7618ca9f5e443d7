"""The views of ``django_supalytics.urls``: ``health/`` and ``metrics/`` (docs/operations.md)."""

from __future__ import annotations

import hmac
import logging

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from . import health as figures
from .conf import conf

logger = logging.getLogger("django_supalytics")


@require_safe
def health(request: HttpRequest) -> HttpResponse:
    """200 while delivery keeps up, else 503; JSON naming the lag. No login, no event data.

    Judged: the live lane's longest due row and the oldest expired lease, each younger than
    ``SUPALYTICS["HEALTH_MAX_LAG"]``. The bulk lane's lag is reported but never fails health:
    a backfill of 100,000 rows legitimately waits about 17 minutes at 100/s. Rows held back for
    the outage circuit's next probe are not due: health says whether our delivery keeps up (no
    worker running, workers stuck), not whether the API is up (``supalytics_outage_open``).
    Two index-only queries per outbox database.
    """
    try:
        state = figures.health()
    except DatabaseError:
        logger.warning("supalytics health: the outbox's database did not answer", exc_info=True)
        response: HttpResponse = JsonResponse({"status": "unavailable"}, status=503)
    else:
        response = JsonResponse(state.as_json(), status=200 if state.ok else 503)
    # Not logged by django.request as a server error: a probe every few seconds while delivery
    # is behind would flood the error logs (the lag is in the body and in the metrics).
    response._has_been_logged = True  # type: ignore[attr-defined]
    response["Cache-Control"] = "no-store"
    return response


def _allowed(request: HttpRequest, token: str | None) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token is None or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus' text format 0.0.4, for staff or ``Authorization: Bearer <METRICS_TOKEN>``:
    anonymous requests get 401 (with ``WWW-Authenticate``) when a token is set, else 403."""
    token = conf.METRICS_TOKEN
    if not _allowed(request, token):
        if token is None:
            return HttpResponse("staff only", status=403, content_type="text/plain")
        response = HttpResponse("a bearer token is needed", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="supalytics"'
        return response
    body = figures.exposition(figures.metrics())
    response = HttpResponse(body, content_type=figures.CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response
