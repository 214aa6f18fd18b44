"""The ``eva-lora`` command line, driven as a user drives it: ``python -m eva_core.cli ...`` in a subprocess.

The generic tests need eva-core alone (a ``module:factory`` model and ``.pt`` batches); the MiniLM +
SST-2 tests need eva-nlu installed beside it (the ``nlu`` domain's ``eva-lora fit`` hooks).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import distribution
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import eva_core
from eva_core.cli.parser import PROG
from eva_core.testing import assert_one_line_error
from eva_core.testing import run_cli as eva

# --- generic: a module:factory model and .pt batches, eva-core alone --------------------------------

FACTORY = """
import torch
from safetensors.torch import load_file
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
"""


@pytest.fixture(scope="module")
def generic_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """``eva-lora fit tiny_factory:build batches.pt --domain generic``: (code folder, data file, out folder)."""
    root = tmp_path_factory.mktemp("generic")
    (root / "tiny_factory.py").write_text(textwrap.dedent(FACTORY))
    generator = torch.Generator().manual_seed(1)
    scales = torch.logspace(0, -2, 8)
    torch.save([torch.randn(32, 8, generator=generator) * scales for _ in range(6)], root / "batches.pt")
    out = root / "run"
    result = eva(
        "fit", "tiny_factory:build", str(root / "batches.pt"), "--domain", "generic", "--rank", "2",
        "--tau", "0", "--max-batches", "6", "--out", str(out), pythonpath=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ranks:" in result.stdout and "state:" in result.stdout
    return root, root / "batches.pt", out


def test_fit_generic_writes_state_and_adapter(generic_run: tuple[Path, Path, Path]) -> None:
    from peft import PeftModel

    root, _, out = generic_run
    state = eva_core.EvaState.load(out / "state")
    assert set(state.ranks) == {"0", "2"} and sum(state.ranks.values()) == 4
    assert state.extra["cli"]["domain"] == "generic"
    sys.path.insert(0, str(root))
    try:
        import tiny_factory  # written by the fixture

        loaded = PeftModel.from_pretrained(tiny_factory.build(), str(out / "adapter"))
    finally:
        sys.path.remove(str(root))
    weight = loaded.base_model.model[0].lora_A["default"].weight
    assert torch.allclose(weight, state.components("0").to(weight.dtype), atol=1e-6)


def test_reallocate_changes_ranks(generic_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, _, out = generic_run
    result = eva("reallocate", str(out), "--rank", "1", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    before = eva_core.EvaState.load(out / "state")
    after = eva_core.EvaState.load(tmp_path / "state")
    assert after.config.rank == 1 and sum(after.ranks.values()) == 2 != sum(before.ranks.values())
    assert after.steps == before.steps


def test_reallocate_beyond_the_saved_components_is_one_line(
    generic_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    result = eva("reallocate", str(generic_run[2]), "--rank", "8", "--out", str(tmp_path))
    assert_one_line_error(result, "reallocate(rank=8")


def test_missing_model_path(generic_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    result = eva("fit", str(tmp_path / "no-such-model"), str(generic_run[1]), "--out", str(tmp_path / "o"))
    assert_one_line_error(result, "MODEL=", "no such file or folder")


def test_missing_model_module(generic_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    result = eva("fit", "no_such_pkg.models:build", str(generic_run[1]), "--out", str(tmp_path / "o"))
    assert_one_line_error(result, "no module 'no_such_pkg.models'")


def test_unknown_domain_lists_the_installed_ones(generic_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, data, _ = generic_run
    result = eva("fit", "tiny_factory:build", str(data), "--domain", "astro", "--out", str(tmp_path), pythonpath=root)
    assert_one_line_error(result, "'astro' is not an installed eva domain", "installed: generic")


def test_missing_data_file(generic_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root = generic_run[0]
    result = eva("fit", "tiny_factory:build", str(tmp_path / "nope.pt"), "--out", str(tmp_path), pythonpath=root)
    assert_one_line_error(result, "DATA=", "no such file")


def test_unreadable_data_file(generic_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root = generic_run[0]
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a tensor file")
    result = eva("fit", "tiny_factory:build", str(corrupt), "--out", str(tmp_path / "o"), pythonpath=root)
    assert_one_line_error(result, "DATA=", "torch.load")
    unknown = tmp_path / "rows.parquet"
    unknown.write_bytes(b"PAR1")
    result = eva("fit", "tiny_factory:build", str(unknown), "--out", str(tmp_path / "o"), pythonpath=root)
    assert_one_line_error(result, "does not read this kind of file")


def test_state_dir_without_a_state(tmp_path: Path) -> None:
    for command in (
        ["report", str(tmp_path), "--out", str(tmp_path / "r")],
        ["reallocate", str(tmp_path), "--out", "x"],
    ):
        assert_one_line_error(eva(*command), "holds no saved EVA state")
    assert_one_line_error(eva("report", str(tmp_path / "absent"), "--out", "x"), "is not a folder")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = eva("report", str(tmp_path), "--out", str(tmp_path / "r"), "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "MissingStateError" in result.stderr


def test_usage_errors_exit_2() -> None:
    result = eva("fit")
    assert result.returncode == 2 and "usage: eva-lora fit" in result.stderr


def test_the_console_script_is_eva_lora() -> None:
    """The script the installed distribution puts on PATH is the name usage lines and messages give."""
    points = distribution("eva-core").entry_points
    scripts = {point.name: point.value for point in points if point.group == "console_scripts"}
    assert scripts == {"eva-lora": "eva_core.cli:main"} and PROG == "eva-lora"


def test_python_dash_m_eva_core_runs_the_command_line() -> None:
    """``python -m eva_core`` is ``eva-lora`` where the script is not on PATH (``-m eva_core.cli`` is too)."""
    result = subprocess.run([sys.executable, "-m", "eva_core", "--help"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: eva-lora ") and "reallocate" in result.stdout


# --- real domains: MiniLM on SST-2, eva-lora plugins -------------------------------------------------


def test_plugins_lists_the_installed_domains() -> None:
    from importlib.metadata import entry_points

    result = eva("plugins", domains=True)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "generic" in lines and "eva-core" in lines["generic"]
    for point in entry_points(group="eva"):
        assert point.name in lines and point.value in lines[point.name]
        assert point.dist is not None and f"{point.dist.name}  " in lines[point.name]
        assert point.dist.version in lines[point.name]
    if "nlu" in lines:
        assert lines["nlu"].rstrip().endswith("model,data")


def test_plugins_shows_disabled_plugins() -> None:
    result = eva("plugins")  # EVA_DISABLE_PLUGINS=*
    assert result.returncode == 0
    for line in result.stdout.splitlines()[2:]:
        assert "disabled (EVA_DISABLE_PLUGINS)" in line


def test_fit_whiten_saves_whitened_rows(generic_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, data, _ = generic_run
    result = eva(
        "fit", "tiny_factory:build", str(data), "--domain", "generic", "--rank", "2", "--tau", "0",
        "--max-batches", "6", "--whiten", "--out", str(tmp_path / "white"), pythonpath=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    state = eva_core.EvaState.load(tmp_path / "white" / "state")
    assert state.config.whiten
    plain, whitened = state.components("0", whiten=False), state.components("0")
    assert not torch.allclose(plain, whitened)  # rows divided by the std of their projections
    adapter = load_file(tmp_path / "white" / "adapter" / "adapter_model.safetensors")
    weight_a = next(tensor for key, tensor in adapter.items() if key.endswith("0.lora_A.weight"))
    torch.testing.assert_close(weight_a, whitened.to(weight_a.dtype))
