"""The shared real-data folder the benchmarks read."""

from __future__ import annotations

from pathlib import Path

import pytest

from eva_bench.paths import DATA_ENV, data_dir
from eva_core.errors import MissingDataError


def test_data_dir_is_found_beside_the_repository(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    source = tmp_path / "repo" / "packages" / "eva-x" / "src" / "module.py"
    source.parent.mkdir(parents=True)
    monkeypatch.chdir(source.parent)
    assert data_dir(anchor=source) == tmp_path / "shared" / "data"


def test_missing_data_dir_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(MissingDataError, match=DATA_ENV) as info:
        data_dir()
    assert isinstance(info.value, FileNotFoundError)


def test_every_benchmark_script_the_harness_names_exists() -> None:
    """The report launches ``benchmarks/compare.py`` and the nox sessions run ``benchmarks/<x>.py``: a moved
    entry point fails here, not an hour into a report."""
    import re

    from eva_bench.paper.runs import COMPARE, ROOT

    named = set(re.findall(r"benchmarks/\w+\.py", (ROOT / "noxfile.py").read_text()))
    missing = [path for path in sorted(named) if not (ROOT / path).is_file()]
    assert COMPARE.is_file(), COMPARE
    assert named and not missing, missing
