"""``make test-matrix``: the suite on each supported Django, on this machine's Python."""

import nox

nox.options.default_venv_backend = "venv"


@nox.session
@nox.parametrize("django", ["4.2", "5.2"])
def tests(session: nox.Session, django: str) -> None:
    session.install("-e", ".[dev]", f"django~={django}.0")
    session.run("pytest", "-q", "-p", "no:randomly", *session.posargs)
