"""``make run``: the site on http://127.0.0.1:8000 with a Celery worker and beat, until Ctrl-C."""

from __future__ import annotations

import os
import sys

from testproject.processes import ROOT, Processes


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    users = get_user_model().objects
    if not users.filter(username="admin").exists():
        users.create_superuser("admin", "admin@example.com", "admin")
    var = settings.VAR_DIR
    with Processes({}, var) as procs:
        procs.celery("worker", "--loglevel=INFO", "--concurrency=2")
        procs.celery("beat", "--loglevel=INFO", "--schedule", str(var / "beat-schedule"))
        print(f"Worker and beat logs: {var}/worker.log, {var}/beat.log")
        print("Admin: http://127.0.0.1:8000/admin/ (admin / admin). Ctrl-C stops everything.")
        try:
            os.chdir(ROOT)
            call_command("runserver", "127.0.0.1:8000", use_reloader=False)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
