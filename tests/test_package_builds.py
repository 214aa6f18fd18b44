"""The wheel and sdist of every published package, built as ``python -m build`` builds them, hold what an index
needs: the LICENSE, the README as the long description, the version, classifiers and requirements, py.typed.

The build runs in a subprocess with only the packages' own ``[build-system] requires`` installed (into a
temporary folder, from the same index as the session's other installs), as PEP 517 build isolation does:
the sdist first, then the wheel from the unpacked sdist, so a file the sdist lacks is missing from the wheel.
"""

from __future__ import annotations

import email.parser
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from email.message import Message

import pytest
from packaging.requirements import Requirement
from workspace import PUBLISHED, ROOT, pyproject

_BUILD = """
import os, sys, tarfile
from pathlib import Path
from hatchling.build import build_sdist, build_wheel

out = Path(sys.argv[1])
for project in sys.argv[2:]:
    os.chdir(project)
    sdist = out / build_sdist(str(out))
    with tarfile.open(sdist) as archive:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(out / "unpacked", **safe)
    os.chdir(out / "unpacked" / sdist.name.removesuffix(".tar.gz"))
    build_wheel(str(out))
"""


@dataclass(frozen=True)
class Built:
    """One package's wheel and sdist: file names and contents."""

    wheel: dict[str, bytes]
    sdist: dict[str, bytes]


def _metadata(text: bytes) -> Message:
    return email.parser.BytesParser().parsebytes(text)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    """Each published package built once (about 10 s for all five, most of it installing hatchling)."""
    root = tmp_path_factory.mktemp("builds")
    backend, out = root / "backend", root / "dist"
    requires = sorted({req for p in PUBLISHED for req in pyproject(p)["build-system"]["requires"]})
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-warn-script-location", "--target", str(backend)]
    installed = subprocess.run([*pip, *requires], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, f"could not install the build requirements {requires}: {installed.stderr}"
    env = {**os.environ, "PYTHONPATH": str(backend)}  # the backend only: not the sources under test
    projects = [str(ROOT / "packages" / p) for p in PUBLISHED]
    result = subprocess.run(
        [sys.executable, "-c", _BUILD, str(out), *projects], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    found = {}
    for package in PUBLISHED:
        stem = f"{package.replace('-', '_')}-{_version(package)}"
        with zipfile.ZipFile(out / f"{stem}-py3-none-any.whl") as wheel:
            wheel_files = {name: wheel.read(name) for name in wheel.namelist()}
        with tarfile.open(out / f"{stem}.tar.gz") as sdist:
            members = [m for m in sdist.getmembers() if m.isfile()]
            sdist_files = {m.name: sdist.extractfile(m).read() for m in members}  # type: ignore[union-attr]
        found[package] = Built(wheel_files, sdist_files)
    return found


def _version(package: str) -> str:
    init = ROOT / "packages" / package / "src" / package.replace("-", "_") / "__init__.py"
    namespace: dict[str, str] = {}
    line = next(line for line in init.read_text().splitlines() if line.startswith("__version__ ="))
    exec(line, namespace)
    return namespace["__version__"]


@pytest.mark.parametrize("package", PUBLISHED)
def test_license_in_wheel_and_sdist(built: dict[str, Built], package: str) -> None:
    license_text = (ROOT / "LICENSE").read_bytes()
    stem = f"{package.replace('-', '_')}-{_version(package)}"
    assert built[package].wheel[f"{stem}.dist-info/licenses/LICENSE"] == license_text
    assert built[package].sdist[f"{stem}/LICENSE"] == license_text


@pytest.mark.parametrize("package", PUBLISHED)
def test_wheel_metadata(built: dict[str, Built], package: str) -> None:
    module, version = package.replace("-", "_"), _version(package)
    files = built[package].wheel
    raw = files[f"{module}-{version}.dist-info/METADATA"]
    meta = _metadata(raw)
    assert meta["Name"] == package and meta["Version"] == version
    assert meta["License-Expression"] == "Apache-2.0" and meta.get_all("License-File") == ["LICENSE"]
    assert meta["Requires-Python"] == ">=3.10" and meta["Description-Content-Type"] == "text/markdown"
    assert raw.split(b"\n\n", 1)[1].decode() == (ROOT / "packages" / package / "README.md").read_text()
    classifiers = meta.get_all("Classifier")
    for python in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {python}" in classifiers
    assert "Typing :: Typed" in classifiers and meta["Author"] and meta["Keywords"]
    requirements = [Requirement(text) for text in meta.get_all("Requires-Dist")]
    assert {r.name for r in requirements if not r.marker} >= {"torch", "peft"}
    core = [r for r in requirements if r.name == "eva-core"]
    if package != "eva-core":
        assert len(core) == 1 and core[0].specifier.contains(version) and not core[0].specifier.contains("0.2.0")
    assert f"{module}/py.typed" in files and f"{module}/__init__.py" in files
    outside = {name.split("/")[0] for name in files} - {module, f"{module}-{version}.dist-info"}
    assert outside == set(), "the wheel holds only the package and its metadata"


@pytest.mark.parametrize("package", PUBLISHED)
def test_sdist_is_thepyproject(built: dict[str, Built], package: str) -> None:
    stem = f"{package.replace('-', '_')}-{_version(package)}"
    files = built[package].sdist
    for name in ("pyproject.toml", "README.md", "LICENSE", "PKG-INFO", f"src/{package.replace('-', '_')}/py.typed"):
        assert f"{stem}/{name}" in files, name
    assert _metadata(files[f"{stem}/PKG-INFO"])["Version"] == _version(package)


def test_console_script_and_plugins(built: dict[str, Built]) -> None:
    """eva-core installs the ``eva-lora`` script (never ``eva``); each domain registers its plugin under ``eva``."""
    version = _version("eva-core")
    scripts = built["eva-core"].wheel[f"eva_core-{version}.dist-info/entry_points.txt"].decode()
    assert "[console_scripts]\neva-lora = eva_core.cli:main\n" in scripts and "\neva =" not in scripts
    for package in PUBLISHED[1:]:
        module = package.replace("-", "_")
        points = built[package].wheel[f"{module}-{version}.dist-info/entry_points.txt"].decode()
        assert f"[eva]\n{package.removeprefix('eva-')} = {module}.plugin\n" in points, points
