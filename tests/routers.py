"""A database router that keeps the outbox in another database, as a site may."""

from __future__ import annotations

import os
from typing import Any


class OutboxRouter:
    """``OutboxEvent`` (reads and writes) in ``alias``; everything else left to the default."""

    def __init__(self, alias: str | None = None, read_alias: str | None = None) -> None:
        self.alias = alias or os.environ["SUPALYTICS_TEST_OUTBOX_DATABASE"]
        self.read_alias = read_alias or self.alias

    def _ours(self, model: type[Any]) -> bool:
        return bool(model._meta.label == "django_supalytics.OutboxEvent")

    def db_for_write(self, model: type[Any], **hints: Any) -> str | None:
        return self.alias if self._ours(model) else None

    def db_for_read(self, model: type[Any], **hints: Any) -> str | None:
        return self.read_alias if self._ours(model) else None
