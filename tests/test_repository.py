"""How the repository fits together: the README's commands, CI, and the packages' plugin registration."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: pytest requires tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    return [block.strip() for block in blocks]


def test_readme_states_two_commands() -> None:
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("nox -s demo")


def test_ci_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in script.splitlines()


def test_every_package_has_src_tests_and_a_normal_torch_range() -> None:
    for package in sorted((ROOT / "packages").iterdir()):
        meta = tomllib.loads((package / "pyproject.toml").read_text())["project"]
        module = meta["name"].replace("-", "_")
        assert (package / "src" / module / "__init__.py").is_file(), package.name
        assert (package / "src" / module / "py.typed").is_file(), package.name
        assert any((package / "tests").glob("test_*.py")), package.name
        torch_reqs = [dep for dep in meta["dependencies"] if re.match(r"torch\b", dep)]
        assert all("==" not in dep for dep in torch_reqs), f"{package.name} pins torch: {torch_reqs}"


def test_workspace_lists_every_package() -> None:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert root["tool"]["uv"]["workspace"]["members"] == ["packages/*"]
    assert (ROOT / "uv.lock").is_file()
