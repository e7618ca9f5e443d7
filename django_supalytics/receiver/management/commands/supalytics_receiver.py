from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...bounds import add_bounds_arguments


class Command(BaseCommand):
    help = (
        "Serve this project (and so the mock /v1/events receiver mounted in its urls) on a "
        "threaded server tuned for load tests. For development only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
        parser.add_argument("--port", type=int, default=8765, help="port to bind (8765)")
        parser.add_argument("--verbose-requests", action="store_true", help="log each request")
        parser.add_argument(
            "--reuse-port",
            action="store_true",
            help="let several receiver processes listen on the same port (SO_REUSEPORT)",
        )
        add_bounds_arguments(parser)

    def handle(
        self,
        *args: Any,
        host: str,
        port: int,
        verbose_requests: bool,
        reuse_port: bool = False,
        max_connections: int = 64,
        connection_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        from ...conf import conf
        from ...server import is_loopback, serve

        if not 0 < port < 65536:
            raise CommandError(f"--port must be between 1 and 65535, not {port}")
        if max_connections < 1:
            raise CommandError(f"--max-connections must be at least 1, not {max_connections}")
        if not 0 < connection_timeout < 86400:
            raise CommandError(
                "--connection-timeout must be between 0 and 86400 seconds, "
                f"not {connection_timeout:g}"
            )
        if not is_loopback(host):
            control = "ON" if conf.CONTROL else "off"
            self.stderr.write(
                f"Warning: listening on {host}, beyond loopback: other machines can reach this "
                f"mock receiver (its control endpoint is {control}). It is meant for tests and "
                "development; bind 127.0.0.1 unless you need otherwise."
            )
        self.stdout.write(f"Supalytics mock receiver: http://{host}:{port}/v1/events")
        try:
            serve(
                host,
                port,
                quiet=not verbose_requests,
                reuse_port=reuse_port,
                max_connections=max_connections,
                connection_timeout=connection_timeout,
            )
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc}") from exc
        except KeyboardInterrupt:
            pass
