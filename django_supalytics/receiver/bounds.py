"""The standalone server's bounds and their command-line options (no Django imports: the
options are parsed before Django is set up)."""

from __future__ import annotations

import argparse

#: Connections served at once, a handler thread each; one more gets a 503 at once.
MAX_CONNECTIONS = 64
#: Seconds a connection may stay silent before it is closed.
CONNECTION_TIMEOUT = 10.0


def add_bounds_arguments(parser: argparse.ArgumentParser) -> None:
    """``--max-connections`` and ``--connection-timeout``, for both ways of running it."""
    parser.add_argument(
        "--max-connections",
        type=int,
        default=MAX_CONNECTIONS,
        help=f"connections served at once, a thread each; more get a 503 ({MAX_CONNECTIONS})",
    )
    parser.add_argument(
        "--connection-timeout",
        type=float,
        default=CONNECTION_TIMEOUT,
        help=f"seconds a connection may stay silent before it is closed ({CONNECTION_TIMEOUT:g})",
    )
