"""VisitorIdMiddleware's cost on a repeat request, side by side with the same request without it.

    .venv/bin/python bench/middleware_overhead.py [--rounds 40]

A logged-in user whose visitor ID is already stored sends the cookie; the view reads
``request.user`` (as most views do). The stack is testproject's, with and without the middleware.
"""

from __future__ import annotations

import argparse

from common import database_label, interleaved_medians, setup, throwaway_database

setup()

from django.contrib.auth import get_user_model
from django.http import HttpResponse
from django.test import Client, override_settings
from django.urls import path

from django_supalytics.models import VisitorIdentity


def view(request):  # type: ignore[no-untyped-def]
    return HttpResponse(f"hello {request.user.pk}")


urlpatterns = [path("bench/", view)]
WITHOUT = [m for m in __import__("django.conf").conf.settings.MIDDLEWARE if "VisitorId" not in m]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    with throwaway_database():
        user = get_user_model().objects.create_user("bench", password="x")
        VisitorIdentity.objects.create(user=user, visitor_id="bench-visitor")
        clients = {}
        with override_settings(ROOT_URLCONF=__name__):
            for name, middleware in (("with", None), ("without", WITHOUT)):
                with override_settings(**({"MIDDLEWARE": middleware} if middleware else {})):
                    client = Client()
                    client.force_login(user)
                    client.cookies["supalytics_vid"] = "bench-visitor"
                    client.handler.load_middleware()
                    clients[name] = client
            ran = {
                n: hasattr(c.get("/bench/").wsgi_request, "supalytics") for n, c in clients.items()
            }
            assert ran == {"with": True, "without": False}, ran
            medians = interleaved_medians(
                {name: (lambda c=c: c.get("/bench/")) for name, c in clients.items()},
                args.rounds,
            )
        print(f"database: {database_label()}")
        print(f"repeat request with VisitorIdMiddleware     {medians['with'] * 1e6:7.0f} µs")
        print(f"same request without it                     {medians['without'] * 1e6:7.0f} µs")
        print(
            f"  overhead {(medians['with'] - medians['without']) * 1e6:.0f} µs per request, "
            f"ratio {medians['with'] / medians['without']:.3f}"
        )


if __name__ == "__main__":
    main()
