"""What each published package carries onto a package index, read from the repository: its LICENSE, a README
that stands alone, one written version, metadata, and the changelog entry of that version.

tests/test_package_builds.py builds the wheels and sdists and checks that these files end up inside them.
"""

from __future__ import annotations

import re

import pytest
from workspace import PUBLISHED, ROOT, pyproject

DOMAINS = tuple(p for p in PUBLISHED if p != "eva-core")
PYTHONS = ("3.10", "3.11", "3.12", "3.13")

_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)")  # [text](target), ![alt](target)
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)  # [label]: target
_HTML = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)""")
_REPOSITORY_PATH = re.compile(r"(?<![\w.~$/-])(?:\.\./|(?:docs|benchmarks|examples|packages|tests|shared)/)")
"""A path into the repository (``docs/cli.md``, ``benchmarks/pretrain_rl.py``, ``../shared/data``...): none of
these is in a wheel, and a package index shows the README without the repository around it."""


def _version(package: str) -> str:
    init = ROOT / "packages" / package / "src" / package.replace("-", "_") / "__init__.py"
    return re.search(r'^__version__ = "([^"]+)"$', init.read_text(), re.M).group(1)


def readme_problems(text: str) -> list[str]:
    """Each relative link of a README and each path into the repository it mentions."""
    targets = _LINK.findall(text) + _REFERENCE.findall(text) + _HTML.findall(text)
    problems = [f"relative link {target!r}" for target in targets if not re.match(r"(https?|mailto):|#", target)]
    for number, line in enumerate(text.splitlines(), 1):
        problems += [f"line {number}: repository path in {line.strip()!r}" for _ in _REPOSITORY_PATH.finditer(line)]
    return problems


@pytest.mark.parametrize("package", PUBLISHED)
def test_license_is_the_root_apache_text(package: str) -> None:
    """Each package ships a copy of the root LICENSE (hatchling packs only files inside the project folder)."""
    root = (ROOT / "LICENSE").read_text()
    assert root.split()[:3] == ["Apache", "License", "Version"] and "END OF TERMS AND CONDITIONS" in root
    assert (ROOT / "packages" / package / "LICENSE").read_text() == root, f"copy LICENSE to packages/{package}/"
    project = pyproject(package)["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]


@pytest.mark.parametrize("package", PUBLISHED)
def test_readme_stands_alone(package: str) -> None:
    assert readme_problems((ROOT / "packages" / package / "README.md").read_text()) == []


def test_readme_check_finds_what_it_guards() -> None:
    text = (
        "see [docs/cli.md](../../docs/cli.md) and [a](#x), ![p](img.png), <a href='guide.html'>\n"
        "built by `python benchmarks/pretrain_rl.py`; data in ../shared/data; [ok](https://arxiv.org/abs/1)\n"
        "[r]: notes.md\n"
    )
    problems = readme_problems(text)
    assert sum(p.startswith("relative link") for p in problems) == 4  # not the anchor, not the https link
    assert sum(p.startswith("line") for p in problems) == 4  # docs/ (link target), benchmarks/, ../shared twice


@pytest.mark.parametrize("package", PUBLISHED)
def test_one_written_version(package: str) -> None:
    """The version is written once, as ``__version__``; hatch reads it from there into the metadata."""
    project = pyproject(package)
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["hatch"]["version"]["path"] == f"src/{package.replace('-', '_')}/__init__.py"
    assert _version(package) == _version("eva-core"), "the packages are released together"


@pytest.mark.parametrize("package", PUBLISHED)
def test_metadata_is_complete(package: str) -> None:
    project = pyproject(package)["project"]
    assert project["authors"] and project["keywords"] and project["readme"] == "README.md"
    classifiers = project["classifiers"]
    assert [c for c in classifiers if c.startswith("Programming Language :: Python :: 3.")] == [
        f"Programming Language :: Python :: {version}" for version in PYTHONS
    ]
    assert project["requires-python"] == f">={PYTHONS[0]}"
    assert "Typing :: Typed" in classifiers and any(c.startswith("Topic :: ") for c in classifiers)
    assert not any(c.startswith("License :: ") for c in classifiers), "PEP 639: the SPDX `license` says it"
    assert set(project.get("urls", {})) <= {"Paper"}, "invent no URL: the project has no published site yet"


@pytest.mark.parametrize("package", DOMAINS)
def test_domains_require_eva_core_of_their_minor_series(package: str) -> None:
    major, minor, _ = _version("eva-core").split(".", 2)
    spec = f"eva-core>={major}.{minor},<{major}.{int(minor) + 1}"
    assert [dep for dep in pyproject(package)["project"]["dependencies"] if dep.startswith("eva-core")] == [spec]


def test_changelog_has_the_released_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(_version('eva-core'))}\] - ", changelog, re.M), "add a CHANGELOG entry"
