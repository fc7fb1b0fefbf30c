"""Developer tasks. `nox` runs tests, lint and typecheck; slower sessions are opt-in."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


def group(name: str) -> list[str]:
    return nox.project.dependency_groups(PYPROJECT, name)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (root-only cgroup tests skip with a reason elsewhere)."""
    session.install("-e", ".", *group("test"))
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and common bugs with ruff."""
    session.install(*group("lint"))
    session.run("ruff", "check", ".", *session.posargs)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check jobd and jobctl with mypy --strict."""
    session.install("-e", ".", *group("typecheck"))
    session.run("mypy", *session.posargs)


@nox.session(default=False)
def proto(session: nox.Session) -> None:
    """Regenerate jobd/v1 from proto/ (commit the result)."""
    session.install(*group("proto"))
    session.run("python", "proto/gen.py", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Run the benchmarks and print their table (slow; `-- --quick` for a short run)."""
    session.install("-e", ".", *group("test"))
    session.run("python", "tests/bench.py", *session.posargs)


@nox.session(default=False)
def vm(session: nox.Session) -> None:
    """Run the cgroup v2, isolation and systemd tests in a User-Mode Linux VM (root; slow)."""
    session.install("-e", ".", *group("test"))
    session.run("python", "tests/vm/run.py", *session.posargs)
