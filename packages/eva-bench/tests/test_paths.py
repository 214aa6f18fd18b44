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
