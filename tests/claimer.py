"""A worker process that claims rows of one database until none is left, and prints their IDs.

python -m tests.claimer ALIAS
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django_supalytics.models import OutboxEvent

    alias = sys.argv[1]
    claimed: list[int] = []
    while batch := OutboxEvent.objects.using(alias).claim(3):
        claimed.extend(event.pk for event in batch)
    print(json.dumps(claimed))


if __name__ == "__main__":
    main()
