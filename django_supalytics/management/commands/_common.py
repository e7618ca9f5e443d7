"""What the supalytics_* commands share: argument parsing and a progress bar."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from django.core.management.base import CommandError, CommandParser

from ...validation import MetadataValue


def database_alias(alias: str) -> str:
    """``--database``: an alias of ``DATABASES``, or a usage error naming the aliases there are."""
    from django.db import connections

    known = list(connections)
    if alias not in known:
        raise usage_error(
            f"--database {alias!r} is not a database alias; the aliases are: "
            + ", ".join(map(repr, known))
        )
    return alias


def add_database_argument(parser: CommandParser) -> None:
    parser.add_argument(
        "--database",
        default=None,
        help="the outbox's database alias (default: the router's for OutboxEvent)",
    )


def usage_error(message: str) -> CommandError:
    """Bad input: a clear message and exit status 2, like argparse's own errors."""
    return CommandError(message, returncode=2)


def parse_value(text: str) -> MetadataValue:
    """``29`` → 29, ``1.5`` → 1.5, ``true``/``false`` → bool, anything else a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_metadata(pairs: list[str] | None) -> dict[str, MetadataValue] | None:
    if not pairs:
        return None
    metadata: dict[str, MetadataValue] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise usage_error(f"--metadata takes key=value, not {pair!r}")
        metadata[key] = parse_value(value)
    return metadata


class Progress:
    """A one-line progress bar on a terminal; a line every 10% elsewhere."""

    def __init__(self, total: int, out: Any, label: str = "", width: int = 30) -> None:
        self.total = max(total, 1)
        self.out = out
        self.label = label
        self.width = width
        self.done = 0
        stream: TextIO = getattr(out, "_out", sys.stdout)
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last_decile = -1

    def advance(self, count: int = 1) -> None:
        self.done += count
        fraction = min(1.0, self.done / self.total)
        if self.tty:
            filled = int(fraction * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            self.out.write(f"\r{self.label} [{bar}] {self.done}/{self.total}", ending="")
            self.out.flush()
        elif int(fraction * 10) != self._last_decile:
            self._last_decile = int(fraction * 10)
            self.out.write(f"{self.label} {self.done}/{self.total}")

    def finish(self) -> None:
        if self.tty:
            self.out.write("")
