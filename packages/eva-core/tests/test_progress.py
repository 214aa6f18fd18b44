"""Progress where the user looks: a bar on a terminal and in a notebook kernel (whose stderr is no terminal),
INFO lines every ``LOG_EVERY_SECONDS`` in a batch job, nothing when ``progress=False``, and one summary line
at the end of every fit."""

from __future__ import annotations

import io
import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from eva_core import fit
from eva_core.cli.main import main
from eva_core.fitting import feed
from eva_core.fitting.feed import LOG_EVERY_SECONDS, BatchProgress, in_notebook, progress_display

FEED, LOOP = "eva_core.fitting.feed", "eva_core.fitting.loop"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def batch_job(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Make this test a batch job: stderr a plain stream (no terminal), the process no notebook kernel.
    (Called in the test's body: pytest puts its own capture back on ``sys.stderr`` after the fixtures.)"""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(feed, "in_notebook", lambda: False)
    return stream


def test_the_display_follows_where_the_fit_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    batch_job(monkeypatch)
    assert progress_display(True) == "log"
    assert progress_display(False) == "off"
    monkeypatch.setattr(feed, "in_notebook", lambda: True)  # a Jupyter kernel: stderr is no terminal there
    assert progress_display(True) == "bar"
    assert progress_display(False) == "off"
    monkeypatch.setattr(feed, "in_notebook", lambda: False)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress_display(True) == "bar"
    assert progress_display(False) == "off"


def test_a_notebook_kernel_shows_the_bar_although_stderr_is_no_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = batch_job(monkeypatch)
    monkeypatch.setattr(feed, "in_notebook", lambda: True)
    with BatchProgress(iter(range(3)), range(3), max_steps=10, start=0, shown=True, layers=2) as bar:
        assert [next(bar) for _ in range(3)] == [0, 1, 2]
        assert not bar.bar.disable
    assert "EVA: " in stderr.getvalue()  # tqdm wrote the bar to the (non-terminal) stderr


def fake_ipython(monkeypatch: pytest.MonkeyPatch, shell: object) -> None:
    module = types.ModuleType("IPython")
    module.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", module)


def test_a_kernel_is_told_from_a_terminal_ipython(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not in_notebook()
    fake_ipython(monkeypatch, None)  # IPython imported, no shell running
    assert not in_notebook()
    fake_ipython(monkeypatch, types.SimpleNamespace())  # a terminal IPython: no kernel
    assert not in_notebook()
    fake_ipython(monkeypatch, types.SimpleNamespace(kernel=object()))  # ipykernel's ZMQInteractiveShell
    assert in_notebook()


class Clock:
    """A clock the test moves: ``next()`` per reading, from ``times``."""

    def __init__(self, times: list[float]) -> None:
        self.times: Iterator[float] = iter(times)

    def __call__(self) -> float:
        return next(self.times)


def test_a_batch_job_logs_the_first_batch_then_every_period(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = batch_job(monkeypatch)
    caplog.set_level(logging.INFO, logger=FEED)
    period = LOG_EVERY_SECONDS
    # the start, then one reading per batch: logged on the first, after a full period, not just before one
    clock = Clock([100.0, 100.0, 110.0, 100 + period, 101 + period, 99.99 + 2 * period, 200 + period])
    with BatchProgress(iter(range(6)), range(6), max_steps=10, start=0, shown=True, layers=4, clock=clock) as bar:
        next(bar)
        next(bar)
        bar.converged_layers(1)
        for _ in range(4):
            next(bar)
        assert bar.bar.disable
    assert stderr.getvalue() == ""  # no bar in a batch job
    lines = [record.getMessage() for record in caplog.records if record.name == FEED]
    assert lines == [
        "EVA fit: 1/6 batches read, 0/4 layers converged (4 still measuring), 0s elapsed",
        f"EVA fit: 3/6 batches read, 1/4 layers converged (3 still measuring), {period:.0f}s elapsed",
        f"EVA fit: 6/6 batches read, 1/4 layers converged (3 still measuring), {100 + period:.0f}s elapsed",
    ]
    assert {record.levelno for record in caplog.records} == {logging.INFO}


@pytest.mark.parametrize("where", ["terminal", "off"])
def test_no_log_lines_with_a_bar_or_without_progress(
    where: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_job(monkeypatch)
    caplog.set_level(logging.INFO, logger=FEED)
    if where == "terminal":
        monkeypatch.setattr(sys, "stderr", Terminal())

    def clock() -> float:
        raise AssertionError("a bar, or no progress, reads no clock per batch")

    with BatchProgress(iter(range(3)), range(3), 10, 0, shown=where != "off", layers=2, clock=clock) as bar:
        assert [next(bar) for _ in range(3)] == [0, 1, 2]
        assert bar.bar.disable == (where == "off")  # (tqdm disables a bar when it closes)
    assert caplog.records == []


def batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(16, 8, generator=generator) * torch.logspace(0, -2, 8) for _ in range(5)]


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


@pytest.mark.parametrize("progress", [True, False])
def test_every_fit_logs_one_summary(
    progress: bool, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_job(monkeypatch)
    caplog.set_level(logging.INFO, logger="eva_core.fitting")
    state = fit(model(), batches(), rank=2, rho=2.0, tau=0.0, max_steps=4, min_steps=4, progress=progress)
    summaries = [record.getMessage() for record in caplog.records if record.name == LOOP]
    assert summaries == [
        f"EVA fit done: 2 layers, 4 batches, 2/2 layers converged, ranks {sum(state.ranks.values())} of the "
        f"budget 4 (rank 2 x 2 layers), {state.seconds:.1f}s"
    ]
    progress_lines = [record.getMessage() for record in caplog.records if record.name == FEED]
    assert progress_lines == (["EVA fit: 1/4 batches read, 0/2 layers converged (2 still measuring), 0s elapsed"]
                              if progress else [])  # fmt: skip


def test_the_command_line_shows_progress_lines_in_a_batch_job(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``eva fit`` logs at WARNING, but lets the fit's progress lines through (``--no-progress`` stops them)."""
    (tmp_path / "progress_factory.py").write_text(
        "import torch\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))\n"
    )
    torch.save(batches(), tmp_path / "b.pt")
    monkeypatch.syspath_prepend(str(tmp_path))
    batch_job(monkeypatch)
    argv = ["fit", "progress_factory:build", str(tmp_path / "b.pt"), "--domain", "generic", "--rank", "2"]
    argv += ["--tau", "0", "--max-batches", "2", "--batch-size", "16"]
    feed_logger = logging.getLogger(FEED)
    level = feed_logger.level
    try:
        for no_progress, out in (([], "out"), (["--no-progress"], "quiet")):
            caplog.clear()
            assert main([*argv, *no_progress, "--out", str(tmp_path / out)]) == 0
            lines = [record.getMessage() for record in caplog.records if record.name == FEED]
            first = "EVA fit: 1/2 batches read, 0/2 layers converged (2 still measuring), 0s elapsed"
            assert lines == ([] if no_progress else [first])
    finally:
        feed_logger.setLevel(level)  # main() sets it for its process
