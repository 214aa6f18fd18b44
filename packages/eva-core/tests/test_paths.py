"""The cache folder every domain package shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from eva_core.paths import CACHE_ENV, cache_dir


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert cache_dir() == tmp_path
    assert cache_dir("dt-halfcheetah") == tmp_path / "dt-halfcheetah"
    monkeypatch.delenv(CACHE_ENV)
    assert cache_dir() == Path.home() / ".cache" / "eva"
