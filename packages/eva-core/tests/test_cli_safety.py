"""The command line never destroys what the user had and fails before the work: ``--out`` checks, value
checks of every numeric option, misspelt ``--option`` keys; and a property test over argument vectors.

``eva`` runs in this process (``eva_core.cli.main``), with a ``module:factory`` model that records each
call, so a test can tell whether the model was ever loaded.
"""

from __future__ import annotations

import contextlib
import io
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from eva_core import EvaState
from eva_core.cli.main import main

FACTORY = """
import torch
from pathlib import Path
from torch import nn

CALLS = Path(__file__).with_name("calls.txt")

def build():
    with CALLS.open("a") as calls:
        calls.write("build\\n")
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder with ``safety_factory.py`` (importable) and ``batches.pt`` (6 batches (32, 8))."""
    folder = tmp_path_factory.mktemp("safety")
    (folder / "safety_factory.py").write_text(textwrap.dedent(FACTORY))
    generator = torch.Generator().manual_seed(1)
    torch.save([torch.randn(32, 8, generator=generator) * torch.logspace(0, -2, 8) for _ in range(6)], folder / "b.pt")
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("safety_factory", None)


def eva(*argv: str) -> tuple[int, str, str]:
    """``eva *argv`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def fit_args(root: Path, out: Path | str, *more: str) -> list[str]:
    return ["fit", "safety_factory:build", str(root / "b.pt"), "--domain", "generic", "--rank", "2", "--tau", "0",
            "--max-batches", "3", "--batch-size", "32", "--no-progress", "--out", str(out), *more]  # fmt: skip


def calls(root: Path) -> int:
    path = root / "calls.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("eva-lora: error:")]
    assert len(lines) == 1, err
    return lines[0]


def snapshot(folder: Path, skip: Path | None = None) -> dict[str, bytes | None]:
    """Every file and folder under ``folder`` (not under ``skip``) and the bytes of each file."""
    found: dict[str, bytes | None] = {}
    for path in sorted(folder.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        found[str(path.relative_to(folder))] = path.read_bytes() if path.is_file() else None
    return found


@pytest.fixture(scope="module")
def fitted(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fitted") / "run"
    code, _, err = eva(*fit_args(root, out))
    assert code == 0, err
    return out


# --- --out: refused before any work -------------------------------------------------------------------


def test_fit_refuses_a_non_empty_out_before_loading_the_model(root: Path, tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("mine")
    before, loads = snapshot(tmp_path), calls(root)
    code, _, err = eva(*fit_args(root, tmp_path))
    assert code == 1 and "exists and is not empty" in error_line(err) and "--overwrite" in err
    assert snapshot(tmp_path) == before and calls(root) == loads


def test_overwrite_replaces_the_outputs_and_keeps_other_files(root: Path, fitted: Path, tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("mine")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "stale.json").write_text("{}")
    code, _, err = eva(*fit_args(root, tmp_path, "--overwrite"))
    assert code == 0, err
    assert (tmp_path / "precious.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "precious.txt", "state"]  # no staging left
    assert not (tmp_path / "state" / "stale.json").exists()
    assert EvaState.load(tmp_path / "state").ranks == EvaState.load(fitted / "state").ranks


@pytest.mark.parametrize("where", ["file", "under_a_file", "data", "ancestor_of_data"])
def test_fit_refuses_an_out_it_cannot_or_must_not_write(root: Path, tmp_path: Path, where: str) -> None:
    (tmp_path / "a_file").write_text("mine")
    out = {
        "file": tmp_path / "a_file",
        "under_a_file": tmp_path / "a_file" / "sub",
        "data": root / "b.pt",
        "ancestor_of_data": root,
    }[where]
    before, loads = snapshot(tmp_path), calls(root)
    data = snapshot(root, skip=root / "calls.txt")
    code, _, err = eva(*fit_args(root, out, "--overwrite"))
    line = error_line(err)
    assert code == 1 and f"--out {str(out)!r}" in line
    assert snapshot(tmp_path) == before and snapshot(root, skip=root / "calls.txt") == data and calls(root) == loads


def test_an_unwritable_out_fails_before_the_fit(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)  # root ignores chmod
    loads = calls(root)
    code, _, err = eva(*fit_args(root, tmp_path / "new" / "run"))
    assert code == 1 and "cannot be written" in error_line(err) and calls(root) == loads
    assert list(tmp_path.iterdir()) == []


def test_a_failed_fit_leaves_no_out(root: Path, tmp_path: Path) -> None:
    code, _, err = eva(*fit_args(root, tmp_path / "run", "--targets", "no_such_layer"))
    assert code == 1 and "no_such_layer" in error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_reallocate_never_writes_over_its_input(fitted: Path) -> None:
    before = snapshot(fitted)
    for state_dir, out in [(fitted, fitted), (fitted / "state", fitted), (fitted, fitted / "state")]:
        code, _, err = eva("reallocate", str(state_dir), "--rank", "1", "--out", str(out), "--overwrite")
        assert code == 1 and "is or holds the input" in error_line(err)
    assert snapshot(fitted) == before


def test_reallocate_and_report_refuse_a_non_empty_out(fitted: Path, tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("mine")
    for command in (["reallocate", str(fitted), "--rank", "1"], ["report", str(fitted)]):
        before = snapshot(tmp_path)
        code, _, err = eva(*command, "--out", str(tmp_path))
        assert code == 1 and "exists and is not empty" in error_line(err)
        assert snapshot(tmp_path) == before
        code, _, err = eva(*command, "--out", str(tmp_path), "--overwrite")
        assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".png")) == [
        "precious.txt", "report.html", "state",
    ]  # fmt: skip


# --- argument values: a usage error naming the option, before any work --------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [("--batch-size", "0"), ("--batch-size", "-4"), ("--rank", "0"), ("--rank", "-1"), ("--max-batches", "0"),
     ("--rho", "0.5"), ("--rho", "nan"), ("--rho", "inf"), ("--tau", "1.5"), ("--tau", "nan"), ("--seed", "-1"),
     ("--target-error", "0"), ("--target-error", "1"), ("--target-error", "nan"),
     ("--seed", str(2**64)), ("--rank", "two"), ("--targets", "("), ("--option", "no_equals_sign")],
)  # fmt: skip
def test_a_bad_value_is_a_usage_error_naming_the_option(root: Path, tmp_path: Path, option: str, value: str) -> None:
    loads = calls(root)
    code, _, err = eva(*fit_args(root, tmp_path / "run"), option, value)
    assert code == 2 and "Traceback" not in err
    assert f"error: argument {option}" in err and repr(value) in err
    assert calls(root) == loads and list(tmp_path.iterdir()) == []


def test_reallocate_values_are_checked(fitted: Path, tmp_path: Path) -> None:
    for option, value in [("--rank", "0"), ("--rho", "0.9"), ("--rho", "nan")]:
        code, _, err = eva("reallocate", str(fitted), option, value, "--out", str(tmp_path / "r"))
        assert code == 2 and f"error: argument {option}" in err


def test_a_misspelt_option_key_is_an_error_naming_it(root: Path, tmp_path: Path) -> None:
    code, _, err = eva(*fit_args(root, tmp_path / "run"), "-o", "max_lenght=64")
    line = error_line(err)
    assert code == 1 and "--option max_lenght='64'" in line and "domain 'generic'" in line
    assert list(tmp_path.iterdir()) == []


# --- a property over argument vectors ---------------------------------------------------------------

VALUES = {
    "--rank": ["1", "2", "3", "0", "-1", "x", "1e3", "2147483648", "40000"],
    "--rho": ["1", "1.5", "2", "0.5", "nan", "inf", "-1", "abc", "1e300", "2147483647"],
    "--tau": ["0", "0.5", "1", "1.5", "-0.1", "nan"],
    "--target-error": ["0.3", "0.05", "0", "1", "nan"],
    "--max-batches": ["1", "2", "6", "0", "-2", "2147483647", "9" * 30],
    "--batch-size": ["1", "16", "32", "0", "-3", "x", "2147483647"],
    "--seed": ["0", "7", "-1", "9" * 25, "1.5"],
    "--targets": ["0", ".*", "(", "no_such", "[", "2"],
    "--option": ["k=v", "novalue", "=v", "max_length=64"],
    "--domain": ["generic", "astro"],
}
FLAGS = ["--whiten", "--no-whiten", "--no-progress", "--overwrite"]
OUTS = ["new", "empty", "non_empty", "file", "data", "root"]


@settings(max_examples=40)
@given(
    chosen=st.lists(st.sampled_from(sorted(VALUES)), max_size=4, unique=True).flatmap(
        lambda names: st.tuples(*[st.tuples(st.just(n), st.sampled_from(VALUES[n])) for n in names])
    ),
    flags=st.lists(st.sampled_from(FLAGS), max_size=2, unique=True),
    where=st.sampled_from(OUTS),
)
def test_any_argument_vector_runs_or_fails_cleanly(
    root: Path, tmp_path_factory: pytest.TempPathFactory, chosen: tuple[tuple[str, str], ...], flags: list[str],
    where: str,
) -> None:  # fmt: skip
    """Exit 0 with both outputs written; 2 with a usage error naming the option; or 1 with one ``eva-lora: error``
    line; never a traceback; no file outside ``--out`` changes, nor a non-empty ``--out`` without
    ``--overwrite``, nor any input."""
    sandbox = tmp_path_factory.mktemp("case")
    (sandbox / "keep.txt").write_text("keep")
    out = {"new": sandbox / "a" / "b", "empty": sandbox / "empty", "non_empty": sandbox / "full",
           "file": sandbox / "keep.txt", "data": root / "b.pt", "root": root}[where]  # fmt: skip
    (sandbox / "empty").mkdir()
    (sandbox / "full").mkdir()
    (sandbox / "full" / "mine.txt").write_text("mine")
    argv = fit_args(root, out, *[item for pair in chosen for item in pair], *flags)
    mine = sandbox / "a" if where == "new" else out  # a new --out's parent folder is created with it
    before, inputs = snapshot(sandbox, skip=mine), snapshot(root, skip=root / "calls.txt")
    full = snapshot(sandbox / "full")
    code, _, err = eva(*argv)
    event(f"exit status {code}")
    assert "Traceback" not in err, err
    assert code in (0, 1, 2), err
    if code == 2:
        named = [name for name, _ in chosen if f"argument {name}" in err or f"argument {name}/" in err]
        assert named and "usage: eva-lora fit" in err, err
    elif code == 1:
        line = error_line(err)
        event(line.split("'")[0][:60])
        assert "run with --debug" not in line, line  # an EvaError, not a raw one
    else:
        assert (out / "state" / "eva_state.json").is_file() and (out / "adapter").is_dir()
    assert snapshot(sandbox, skip=mine) == before
    assert snapshot(root, skip=root / "calls.txt") == inputs
    if where == "non_empty":
        assert (sandbox / "full" / "mine.txt").read_text() == "mine"
        if "--overwrite" not in flags:
            assert snapshot(sandbox / "full") == full and code != 0
    if where in ("file", "data", "root"):
        assert code != 0


REALLOCATE = {
    "--rank": ["1", "2", "3", "4", "0", "-2", "x", "2147483647"],
    "--rho": ["1", "1.5", "2", "4", "0.5", "nan", "-inf"],
    "--redistribution": ["uniform", "explained_variance", "explained_variance_ratio", "bogus"],
}


@settings(max_examples=40)
@given(
    chosen=st.lists(st.sampled_from(sorted(REALLOCATE)), max_size=3, unique=True).flatmap(
        lambda names: st.tuples(*[st.tuples(st.just(n), st.sampled_from(REALLOCATE[n])) for n in names])
    ),
    overwrite=st.booleans(),
    where=st.sampled_from(["new", "non_empty", "input", "input_state", "file"]),
)
def test_any_reallocate_runs_or_fails_cleanly(
    fitted: Path, tmp_path_factory: pytest.TempPathFactory, chosen: tuple[tuple[str, str], ...], overwrite: bool,
    where: str,
) -> None:  # fmt: skip
    """The same property for ``eva-lora reallocate``: its input state is never changed."""
    sandbox = tmp_path_factory.mktemp("realloc")
    (sandbox / "full").mkdir()
    (sandbox / "full" / "mine.txt").write_text("mine")
    (sandbox / "keep.txt").write_text("keep")
    out = {"new": sandbox / "new", "non_empty": sandbox / "full", "input": fitted, "input_state": fitted / "state",
           "file": sandbox / "keep.txt"}[where]  # fmt: skip
    argv = ["reallocate", str(fitted), "--out", str(out), *[item for pair in chosen for item in pair]]
    before, inputs = snapshot(sandbox, skip=out), snapshot(fitted)
    code, _, err = eva(*argv, *(["--overwrite"] if overwrite else []))
    event(f"exit status {code}")
    assert "Traceback" not in err and code in (0, 1, 2), err
    if code == 2:
        assert any(f"argument {name}" in err for name, _ in chosen), err
    elif code == 1:
        assert "run with --debug" not in error_line(err)
    else:
        assert EvaState.load(out / "state").steps == EvaState.load(fitted / "state").steps
    assert snapshot(fitted) == inputs and snapshot(sandbox, skip=out) == before
    assert (sandbox / "full" / "mine.txt").read_text() == "mine"
    assert code != 0 or (where in ("new", "non_empty") and (overwrite or where == "new"))
