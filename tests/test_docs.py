"""The README's examples, run as printed, the way a user runs them."""

import re
import textwrap

import pytest

from tests.processes import ROOT

pytestmark = pytest.mark.slow

SETTINGS = """
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "rest_framework",
    "django_supalytics",
    "django_supalytics.receiver",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_supalytics.middleware.VisitorIdMiddleware",
]
ROOT_URLCONF = "userproj.urls"
SECRET_KEY = "docs"
USE_TZ = True
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": "db.sqlite3",
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
    }
}
CELERY_BROKER_URL = "memory://"
SUPALYTICS = {"API_KEY": "sly_docs"}
SUPALYTICS_RECEIVER = {"API_KEYS": ["sly_docs"]}
SILENCED_SYSTEM_CHECKS = ["supalytics.W002", "supalytics.W102"]
"""

CELERY = """
import os
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "userproj.settings")
app = Celery("userproj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
"""

# The view the README's examples post to: tracks "upgraded", or rolls back when declined.
URLS = """
from django.db import transaction
from django.http import HttpResponse
from django.urls import path

from django_supalytics import track


def upgrade(request):
    with transaction.atomic():
        track("upgraded", request=request, metadata={"plan": request.POST["plan"]})
        if request.POST.get("decline"):
            transaction.set_rollback(True)
            return HttpResponse(status=402)
    return HttpResponse("ok")


urlpatterns = [path("upgrade/", upgrade)]
"""


def readme_block(after: str) -> str:
    """The first ```python block of README.md after the heading ``after``."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(after) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_readme_pytest_example_passes_as_printed(pytester, monkeypatch):
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE")  # the user's project has its own
    pytester.makepyfile(
        **{
            "userproj/__init__": "from .celery import app\n",
            "userproj/celery": CELERY,
            "userproj/settings": SETTINGS,
            "userproj/urls": URLS,
            "test_upgrade": readme_block("## Test your integration"),
        }
    )
    pytester.makeini(
        textwrap.dedent("""
            [pytest]
            DJANGO_SETTINGS_MODULE = userproj.settings
            pythonpath = .
            filterwarnings = error
        """)
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
