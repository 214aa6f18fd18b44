"""docs/quickstart.ipynb runs from top to bottom without errors, shows its plots inline and reloads the
adapter with plain peft (nbclient executes a copy, so the repository's notebook stays without outputs)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbclient  # docs/guides/requirements.txt, which the cross_package session installs
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "quickstart.ipynb"
DATA = Path(os.environ.get("EVA_DATA_DIR") or ROOT.parent / "shared" / "data")


def test_the_committed_notebook_has_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_the_quickstart_runs_and_shows_its_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (DATA / "glue" / "SST-2" / "train.tsv").is_file():
        pytest.fail(f"SST-2 not found under {DATA}: set EVA_DATA_DIR to the folder holding glue/SST-2/train.tsv")
    copy = tmp_path / "quickstart.ipynb"
    shutil.copy(NOTEBOOK, copy)
    monkeypatch.setenv("EVA_DATA_DIR", str(DATA))  # the kernel inherits the environment
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(copy, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if output.output_type == "display_data" and "image/png" in output.data]
    assert len(images) == 3, "the rank, spectrum and convergence charts are shown inline"
    text = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "ranks sum to 288 = 8 x 36" in text
    assert "reloaded logits identical: True" in text
