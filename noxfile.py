"""``make test-matrix``: the suite on every supported Django and Python, with the real services.

Sessions are named ``tests(dj61_py313)``; ``make test-matrix NOX_ARGS="-k dj61_py313"`` runs one.

Interpreters are found on PATH (``python3.12``) or in pyenv's versions directory; a missing one
fails the session on CI (nox's default there) and is skipped elsewhere.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import nox

nox.options.default_venv_backend = "venv"
nox.options.download_python = "never"

#: (Django, Python) pairs that Django supports: 6.0 and 6.1 need Python 3.12+.
MATRIX = [
    ("5.2", "3.10"),
    ("5.2", "3.11"),
    ("5.2", "3.12"),
    ("5.2", "3.13"),
    ("6.0", "3.12"),
    ("6.0", "3.13"),
    ("6.1", "3.12"),
    ("6.1", "3.13"),
]


def interpreter(version: str) -> str:
    """An interpreter that runs as Python ``version``, or the bare name (nox reports it)."""
    candidates = [shutil.which(f"python{version}") or ""]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    for candidate in candidates:
        # pyenv's shims exist for every version but run only the active ones.
        if candidate and subprocess.run([candidate, "-c", ""], capture_output=True).returncode == 0:
            return candidate
    return f"python{version}"


def _mysql_headers() -> bool:
    """mysqlclient (the MariaDB tests' driver) builds only where the client headers are."""
    return any(
        subprocess.run(["pkg-config", "--exists", name], capture_output=True).returncode == 0
        for name in ("libmariadb", "mysqlclient")
    )


@nox.session
@nox.parametrize(
    ("django", "python"),
    [(django, interpreter(python)) for django, python in MATRIX],
    ids=[f"dj{django}_py{python}".replace(".", "") for django, python in MATRIX],
)
def tests(session: nox.Session, django: str) -> None:
    extras = "dev,mysql" if _mysql_headers() else "dev"
    session.install("-e", f".[{extras}]", f"django~={django}.0")
    session.run("python", "-m", "django", "--version")
    session.run("pytest", "-q", "-p", "no:randomly", "-n", "auto", *session.posargs)
    # dj-stripe's tests, in their own session as in `make test` (they skip on Python 3.10).
    djstripe = ["--ds=tests.settings_djstripe", "tests/test_contrib_djstripe.py"]
    session.run("pytest", "-q", "-p", "no:randomly", *djstripe, *session.posargs)
