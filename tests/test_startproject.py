"""The README's test example, as printed, on a project made by the real ``django-admin
startproject`` plus the README's settings blocks: default middleware, default ALLOWED_HOSTS.

Once on SQLite and once on PostgreSQL (when it answers, or SUPALYTICS_REQUIRE_SERVICES=1). The
project's cache and Celery broker point at a closed port (127.0.0.1:1): a test that reached
either would fail, and a test of the generated project asserts that no connection was tried.
"""

import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.processes import ROOT
from tests.test_docs import UPGRADE_VIEW

pytestmark = pytest.mark.slow

DJANGO_ADMIN = Path(sys.executable).with_name("django-admin")
CLOSED = "127.0.0.1:1"


def readme_section(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def python_blocks(heading: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", readme_section(heading), re.S)


def readme_settings() -> str:
    """Every ``# settings.py`` block of the Install and test sections, in order."""
    blocks = [
        block
        for heading in ("## Install", "## Test your integration")
        for block in python_blocks(heading)
        if block.startswith("# settings.py")
    ]
    assert len(blocks) >= 2, "README: the settings block and the test settings block"
    return "\n".join(blocks)


def readme_test_file() -> str:
    (block,) = [b for b in python_blocks("## Test your integration") if "def test_" in b]
    return block


# The user's own code the README's tests post to: the view of tests/test_docs.py.
VIEW = UPGRADE_VIEW


def readme_celery(name: str) -> str:
    """The README's ``yourproject/<name>`` block (Celery section), for the project "mysite"."""
    (block,) = [b for b in python_blocks("## Celery") if b.startswith(f"# yourproject/{name}")]
    return block.replace("yourproject", "mysite")


# Not the README's: what the test environment asserts about every test of the project.
CONFTEST = """
import socket

import pytest

CLOSED = ("127.0.0.1", 1)
tried = []
_connect = socket.socket.connect


def connect(self, address):
    tried.append(address)
    return _connect(self, address)


socket.socket.connect = connect


@pytest.fixture(autouse=True)
def _nothing_reaches_the_broker_or_the_cache():
    tried.clear()
    yield
    assert CLOSED not in [tuple(a[:2]) for a in tried if isinstance(a, tuple)], tried
"""

HERMETIC_TEST = """
import pytest
from celery.signals import before_task_publish
from django.db import transaction

from django_supalytics import track
from django_supalytics.backends import locmem


@pytest.mark.django_db(transaction=True)
def test_a_committed_event_reaches_no_broker(client):
    published = []

    def on_publish(sender=None, **kwargs):
        published.append(sender)

    before_task_publish.connect(on_publish, weak=False)
    try:
        with transaction.atomic():
            event = track("committed")
        client.post("/upgrade/", {"plan": "pro"})
    finally:
        before_task_publish.disconnect(on_publish)
    assert published == []
    assert locmem.outbox[0] == locmem.HandOver((event.pk,))
    assert len(locmem.outbox) == 2
"""

# Django's test runner (manage.py test), with the README's TEST_RUNNER.
UNITTEST = """
import socket

from celery.signals import before_task_publish
from django.db import transaction
from django.test import TransactionTestCase

from django_supalytics import track
from django_supalytics.backends import locmem


class Hermetic(TransactionTestCase):
    def test_a_committed_event_reaches_no_broker(self):
        published, tried = [], []
        connect = socket.socket.connect

        def on_publish(sender=None, **kwargs):
            published.append(sender)

        def spy(sock, address):
            tried.append(address)
            return connect(sock, address)

        before_task_publish.connect(on_publish, weak=False)
        socket.socket.connect = spy
        try:
            with transaction.atomic():
                event = track("committed")
        finally:
            socket.socket.connect = connect
            before_task_publish.disconnect(on_publish)
        self.assertEqual(published, [])
        self.assertEqual(tried, [])
        self.assertIn(locmem.HandOver((event.pk,)), locmem.outbox)
"""


def postgres_databases() -> str | None:
    """DATABASES for PostgreSQL from SUPALYTICS_TEST_DATABASE_URL, as tests/settings.py reads
    it; None (the test skips) when it does not answer."""
    url = os.environ.get("SUPALYTICS_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 5432), timeout=0.5):
            pass
    except OSError:
        if os.environ.get("SUPALYTICS_REQUIRE_SERVICES") == "1":
            raise
        return None
    from testproject.settings import database_from_url

    database = database_from_url(url)
    database["NAME"] = f"{database['NAME']}_startproject"
    return f"DATABASES = {{'default': {database!r}}}\n"


def make_project(path: Path, databases: str | None) -> None:
    subprocess.run(
        [str(DJANGO_ADMIN), "startproject", "mysite", str(path)],
        check=True,
        timeout=60,
        capture_output=True,
    )
    settings = path / "mysite" / "settings.py"
    assert "django.middleware.common.CommonMiddleware" in settings.read_text()
    with settings.open("a") as f:
        f.write("\n" + readme_settings())
        if databases:
            f.write(databases)
        # The README's cache and a broker, on a closed port: nothing may reach them.
        f.write(f'CACHES["default"]["LOCATION"] = "redis://{CLOSED}/1"\n')
        f.write(f'CELERY_BROKER_URL = "redis://{CLOSED}/0"\n')
        f.write("CELERY_BROKER_CONNECTION_TIMEOUT = 1\n")
    # The README's Celery app, so that a hand-over would reach the (closed) broker.
    (path / "mysite" / "__init__.py").write_text(readme_celery("__init__.py"))
    (path / "mysite" / "celery.py").write_text(readme_celery("celery.py"))
    (path / "mysite" / "views.py").write_text(VIEW)
    urls = path / "mysite" / "urls.py"
    urls.write_text(
        urls.read_text()
        + "\nfrom . import views\n\nurlpatterns += [path('upgrade/', views.upgrade)]\n"
    )
    (path / "test_upgrade.py").write_text(readme_test_file())
    (path / "test_hermetic.py").write_text(HERMETIC_TEST)
    (path / "conftest.py").write_text(CONFTEST)
    (path / "test_unittest_hermetic.py").write_text(UNITTEST)
    (path / "pytest.ini").write_text(
        textwrap.dedent("""
            [pytest]
            DJANGO_SETTINGS_MODULE = mysite.settings
            filterwarnings = error
        """)
    )


def run(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SUPALYTICS_"))}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=path,
        env=env,
        timeout=180,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_the_readme_example_passes_on_a_startproject_site(database, tmp_path):
    databases = None
    if database == "postgres":
        databases = postgres_databases()
        if databases is None:
            pytest.skip("PostgreSQL does not answer at SUPALYTICS_TEST_DATABASE_URL")
    make_project(tmp_path, databases)
    result = run(tmp_path, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout, result.stdout  # 3 of the README, 2 hermetic
    # Django's test runner: only the unittest case is a TestCase.
    result = run(tmp_path, "-W", "error", "manage.py", "test", "-v", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ran 1 test" in result.stderr, result.stderr
