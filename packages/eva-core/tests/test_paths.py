"""The cache and data folders every domain package shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from eva_core import MissingDataError, cache_dir, data_dir
from eva_core.paths import CACHE_ENV, DATA_ENV


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert cache_dir() == tmp_path
    assert cache_dir("dt-halfcheetah") == tmp_path / "dt-halfcheetah"
    monkeypatch.delenv(CACHE_ENV)
    assert cache_dir() == Path.home() / ".cache" / "eva"


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
