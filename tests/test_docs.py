"""The README's examples, run as printed, the way a user runs them."""

import io
import os
import re
import shutil
import sys
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

# The view the README's examples post to: tracks "upgraded", or rolls back when declined
# (tests/test_startproject.py writes it into its project too).
UPGRADE_VIEW = """
from django.db import transaction
from django.http import HttpResponse

from django_supalytics import track


def upgrade(request):
    with transaction.atomic():
        track("upgraded", request=request, metadata={"plan": request.POST["plan"]})
        if request.POST.get("decline"):
            transaction.set_rollback(True)
            return HttpResponse(status=402)
    return HttpResponse("ok")
"""
URLS = (
    UPGRADE_VIEW
    + """
from django.urls import path

urlpatterns = [path("upgrade/", upgrade)]
"""
)


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


def _table_keys(doc: str, heading: str) -> set[str]:
    """The backticked names in the first column of the table under ``heading``."""
    text = (ROOT / "docs" / doc).read_text()
    section = text[text.index(heading) + len(heading) :]
    section = section[: section.find("\n## ")] if "\n## " in section else section
    keys: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            keys.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return keys


def test_every_client_setting_is_documented_and_every_documented_one_exists():
    from django_supalytics.conf import DEFAULTS

    assert _table_keys("settings.md", "## `SUPALYTICS` (the client)") == set(DEFAULTS)


def test_every_receiver_setting_is_documented_and_every_documented_one_exists():
    from django_supalytics.receiver.conf import DEFAULTS

    assert _table_keys("settings.md", "## `SUPALYTICS_RECEIVER`") == set(DEFAULTS)


def test_every_djstripe_setting_is_documented_and_every_documented_one_exists():
    from django_supalytics.contrib.djstripe.conf import DEFAULT_EVENTS, DEFAULTS

    assert _table_keys("settings.md", "## `SUPALYTICS_DJSTRIPE`") == set(DEFAULTS)
    assert _table_keys("djstripe.md", "## Events") == set(DEFAULT_EVENTS)


def _check_ids_in_code() -> set[str]:
    ids: set[str] = set()
    for path in (ROOT / "django_supalytics").rglob("*.py"):
        ids.update(re.findall(r'"(supalytics\.[EW]\d{3})"', path.read_text()))
    return ids


def test_every_check_id_is_documented_and_tested():
    documented = _table_keys("settings.md", "## System checks")
    in_code = _check_ids_in_code()
    assert documented == in_code
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_checks*.py"))
    tests += (ROOT / "tests" / "test_receiver.py").read_text()
    tests += (ROOT / "tests" / "test_contrib_djstripe.py").read_text()
    untested = {
        check_id
        for check_id in in_code
        if check_id not in tests and check_id.split(".")[1].lower() not in tests
    }
    assert not untested


def test_checks_are_bound():
    """Every check function in the checks modules is registered with Django."""
    from django.core.checks.registry import registry

    from django_supalytics.checks import configuration, project
    from django_supalytics.receiver import checks as receiver_checks

    registered = set(registry.get_checks(include_deployment_checks=True))
    # dj-stripe's: tests/test_contrib_djstripe.py, in the session that installs it.
    for module in (configuration, project, receiver_checks):
        for name in dir(module):
            if name.startswith("check_"):
                assert getattr(module, name) in registered, f"{module.__name__}.{name}"


def test_every_documented_command_option_exists():
    from django.core.management import get_commands, load_command_class

    text = (ROOT / "docs" / "operations.md").read_text()
    commands = get_commands()
    rows = [
        (name, usage)
        for name, usage in re.findall(r"^\| `(supalytics_\w+)([^`]*)`", text, re.M)
        if name in commands or usage  # a row with options is a command's row
    ]
    assert {command for command, _ in rows} >= {
        "supalytics_send",
        "supalytics_status",
        "supalytics_drain",
        "supalytics_purge",
        "supalytics_backfill",
    }
    for command, usage in rows:
        parser = load_command_class(commands[command], command).create_parser("manage.py", command)
        known = {option for action in parser._actions for option in action.option_strings}
        documented = set(re.findall(r"--[a-z][a-z-]*", usage))
        assert documented <= known, f"{command}: {documented - known} not in its parser"


@pytest.mark.django_db(transaction=True)
def test_runbook_commands_run(endpoint, published):
    """Every ``python manage.py`` line of docs/production.md's runbook, on rows in each state."""
    import shlex
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    from django_supalytics import track
    from django_supalytics.models import OutboxEvent

    for status in ("pending", "sending", "sent", "failed"):
        event = track(f"runbook_{status}")
        old = timezone.now() - timedelta(days=30)
        OutboxEvent.objects.filter(pk=event.pk).update(
            status=status, created_at=old, sent_at=old, failed_at=old
        )
    text = (ROOT / "docs" / "production.md").read_text()
    runbook = text[text.index("## Runbook") :]
    lines = re.findall(r"^python manage\.py (.+)$", runbook, re.M)
    assert len(lines) >= 5
    for line in lines:
        name, *args = shlex.split(line.split("  #")[0])
        call_command(name, *args, stdout=io.StringIO(), stderr=io.StringIO())
    assert not OutboxEvent.objects.filter(name="runbook_failed").exists()  # purged
    assert [r.json["name"] for r in endpoint.requests] == ["runbook_pending", "setup_check"]


def _python_blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```python\n(.*?)```", path.read_text(), re.S):
            blocks.append((path.name, textwrap.dedent(block)))
    return blocks


def test_every_python_example_in_the_docs_compiles():
    for name, block in _python_blocks():
        compile(block, name, "exec")


def test_every_setting_the_docs_name_exists():
    """``SUPALYTICS["X"]`` and ``SUPALYTICS_RECEIVER["X"]`` anywhere in the docs name real keys."""
    from django_supalytics.conf import DEFAULTS
    from django_supalytics.receiver.conf import DEFAULTS as RECEIVER_DEFAULTS

    text = "".join(p.read_text() for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
    client = set(re.findall(r'SUPALYTICS\[["\']([A-Z_]+)["\']\]', text))
    receiver = set(re.findall(r'SUPALYTICS_RECEIVER\[["\']([A-Z_]+)["\']\]', text))
    assert client and client <= set(DEFAULTS), client - set(DEFAULTS)
    assert receiver <= set(RECEIVER_DEFAULTS), receiver - set(RECEIVER_DEFAULTS)


# The documentation site (mkdocs.yml, `make docs`): mkdocs' URL for docs/<page>.md is <page>/.
DOCS_SITE = "https://django-supalytics.readthedocs.io/en/latest/"
REPOSITORY = "https://github.com/supalytics/django-supalytics"


def _anchors(path) -> set[str]:
    """The ids of a Markdown file's headings, as Python-Markdown's toc (mkdocs) makes them."""
    import unicodedata

    anchors: set[str] = set()
    fenced = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6} (.+?)#*$", line)):
            text = unicodedata.normalize("NFKD", heading.group(1))
            text = re.sub(r"[^\w\s-]", "", text.encode("ascii", "ignore").decode()).strip()
            anchors.add(re.sub(r"[-\s]+", "-", text.lower()))
    return anchors


def _links(path) -> list[str]:
    """The targets of a Markdown file's inline links and images, outside code."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def _check_target(file, anchor: str, where: str) -> str | None:
    if not file.is_file():
        return f"{where}: no {file.relative_to(ROOT)}"
    if anchor and file.suffix == ".md" and anchor not in _anchors(file):
        return f"{where}: no #{anchor} in {file.relative_to(ROOT)}"
    return None


def test_readme_links_work_from_the_package_index():
    """PyPI shows the README without the repository: every link in it is absolute, and each one
    into the docs site or the repository names a page (docs/<page>.md) and anchor that exist."""
    problems: list[str | None] = []
    links = _links(ROOT / "README.md")
    for link in links:
        target, _, anchor = link.partition("#")
        if target.startswith(DOCS_SITE):
            page = target.removeprefix(DOCS_SITE).strip("/") or "index"
            if not re.fullmatch(r"[a-z0-9-]+", page):
                problems.append(f"{link}: not a page URL of the docs site")
                continue
            problems.append(_check_target(ROOT / "docs" / f"{page}.md", anchor, link))
        elif target.startswith(f"{REPOSITORY}/blob/main/"):
            file = ROOT / target.removeprefix(f"{REPOSITORY}/blob/main/")
            problems.append(_check_target(file, anchor, link))
        elif not re.match(r"https?://", link):
            problems.append(f"{link}: relative, broken on the package index")
    assert [p for p in problems if p] == []
    assert sum(link.startswith(DOCS_SITE) for link in links) >= 10


def test_links_between_the_docs_pages_exist():
    """The relative links of docs/*.md, pages and anchors; `make docs` (mkdocs --strict) checks
    them too, this without mkdocs installed."""
    problems: list[str | None] = []
    for path in sorted((ROOT / "docs").glob("*.md")):
        for link in _links(path):
            if re.match(r"[a-z]+:", link):
                continue
            target, _, anchor = link.partition("#")
            file = (path.parent / target) if target else path
            problems.append(_check_target(file, anchor, f"{path.name}: {link}"))
    assert [p for p in problems if p] == []


def test_every_docs_page_is_in_the_site_nav():
    config = (ROOT / "mkdocs.yml").read_text()
    nav = re.findall(r"^\s+- [^:\n]+: (\S+\.md)$", config[config.index("\nnav:") :], re.M)
    assert sorted(nav) == sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert nav[0] == "index.md"


def test_the_project_urls_point_at_the_docs_and_the_repository():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: tomli, a dependency of pytest there
        import tomli as tomllib

    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert set(urls) == {"Homepage", "Documentation", "Source", "Changelog", "Issues"}
    assert DOCS_SITE.startswith(urls["Documentation"])
    assert urls["Source"] == REPOSITORY


def test_the_sdist_ships_the_docs(tmp_path):
    """The sdist as PyPI would get it, built from a copy of the checkout (an in-tree build leaves
    *.egg-info behind) with the setuptools pyproject.toml asks for: docs/ is in it, every page
    and image, with README, CHANGELOG, LICENSE and the site's configuration."""
    import subprocess
    import sys
    import tarfile

    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".nox", ".var", ".hypothesis", "*_cache", "__pycache__", "build",
            "dist", "site", "test-artifacts", "node_modules", "*.egg-info",
        ),
    )  # fmt: skip
    backend = tmp_path / "backend"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(backend)]
    subprocess.run([*pip, "setuptools>=77"], check=True, timeout=180, capture_output=True)
    built = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))",
            str(tmp_path / "dist"),
        ],
        cwd=source,
        env={**os.environ, "PYTHONPATH": str(backend)},
        check=True,
        timeout=180,
        capture_output=True,
        text=True,
    )
    sdist = tmp_path / "dist" / built.stdout.split()[-1]
    with tarfile.open(sdist) as tar:
        top, *_ = tar.getnames()[0].split("/")
        names = {name.removeprefix(f"{top}/") for name in tar.getnames()}
        pkg_info = tar.extractfile(f"{top}/PKG-INFO").read().decode()  # type: ignore[union-attr]
    docs = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*") if p.is_file()}
    assert docs <= names, docs - names
    assert {"README.md", "CHANGELOG.md", "LICENSE", "mkdocs.yml", ".readthedocs.yaml"} <= names
    assert f"Project-URL: Documentation, {DOCS_SITE.removesuffix('en/latest/')}" in pkg_info
    assert "](docs/" not in pkg_info  # the README as PyPI shows it
