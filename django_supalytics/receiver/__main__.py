"""``python -m django_supalytics.receiver``: the mock receiver for any client, no project needed.

    python -m django_supalytics.receiver --port 8765 --key sly_test_local
    curl -X POST http://127.0.0.1:8765/v1/events -H "Authorization: Bearer sly_test_local" \\
         -H "Content-Type: application/json" -d '{"name": "signed_up"}'

Events are kept in a SQLite file (``--db``, a temporary one by default). With ``--control``
(off by default) they are listed at ``GET /v1/_control/events`` and faults are injected with
``POST /v1/_control/faults``; ``--control-token`` makes those need a bearer token. Only the
host names asked for are served: loopback names, the ``--host`` address, and
``--allowed-host`` (repeatable).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from django.conf import settings

from .bounds import add_bounds_arguments

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "[::1]"]


def allowed_hosts(bind: str, extra: list[str]) -> list[str]:
    """The Host names to serve: never ``*``, so a DNS-rebinding page cannot reach the mock."""
    hosts = list(LOOPBACK_NAMES)
    if bind and bind not in ("0.0.0.0", "::"):
        hosts.append(f"[{bind}]" if ":" in bind else bind)
    return [*hosts, *extra]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m django_supalytics.receiver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--key",
        action="append",
        dest="keys",
        help="an API key to accept (repeatable); default sly_test_local",
    )
    parser.add_argument("--rate-limit", type=int, default=100)
    parser.add_argument("--db", help="SQLite file for received events")
    parser.add_argument("--redis", help="Redis URL shared by several receiver processes")
    parser.add_argument(
        "--control",
        action="store_true",
        help="serve /v1/_control (faults, reset, received events); off by default",
    )
    parser.add_argument(
        "--control-token",
        help="require 'Authorization: Bearer TOKEN' on /v1/_control (implies --control)",
    )
    # The control endpoint used to be on unless this was given; it is now off unless asked for.
    parser.add_argument("--no-control", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        help="another Host name to serve (repeatable); loopback names and --host are served",
    )
    add_bounds_arguments(parser)
    args = parser.parse_args(argv)
    try:
        import rest_framework  # noqa: F401
    except ImportError:
        print(
            "The mock receiver needs the [receiver] extra: "
            'pip install "django-supalytics[receiver]"',
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    control = (args.control or bool(args.control_token)) and not args.no_control
    db = args.db or os.path.join(tempfile.mkdtemp(prefix="supalytics-receiver-"), "events.db")
    cache = (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": args.redis}
        if args.redis
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
    settings.configure(
        DEBUG=False,
        SECRET_KEY="supalytics-mock-receiver",
        ALLOWED_HOSTS=allowed_hosts(args.host, args.allowed_host),
        ROOT_URLCONF="django_supalytics.receiver.urls",
        # Calls request.get_host() on every request, so ALLOWED_HOSTS is enforced.
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",  # DRF's anonymous user
            "rest_framework",
            "django_supalytics.receiver",
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": db,
                "OPTIONS": {"timeout": 20},
            }
        },
        CACHES={"default": cache},
        USE_TZ=True,
        WSGI_APPLICATION=None,
        SUPALYTICS_RECEIVER={
            "API_KEYS": args.keys or ["sly_test_local"],
            "RATE_LIMIT": args.rate_limit,
            "CONTROL": control,
            "CONTROL_TOKEN": args.control_token or None,
        },
        SILENCED_SYSTEM_CHECKS=["supalytics.W102", "supalytics.W103"],
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    call_command(
        "supalytics_receiver",
        host=args.host,
        port=args.port,
        max_connections=args.max_connections,
        connection_timeout=args.connection_timeout,
    )


if __name__ == "__main__":
    main()
