"""``eva-lora report``: the charts, the self-contained page, and the page opened in a real headless Chromium
(Debian's ``chromium``: it must load without console messages and show the rank chart)."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import eva_core
from eva_core.plugins.manager import DISABLE_ENV
from eva_core.report import convergence_curve

_CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # CI containers run as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model fitted in process, its state saved, then ``eva-lora report`` run on it."""
    from conftest import tiny_model, token_batches

    root = tmp_path_factory.mktemp("report")
    settings = {"rank": 4, "rho": 2.0, "tau": 0.0, "min_steps": 6, "max_steps": 6, "progress": False}
    state = eva_core.fit(tiny_model(0), token_batches(6), **settings)
    state.save(root / "run" / "state")
    env = {**os.environ, DISABLE_ENV: "*", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "eva_core.cli", "report", str(root / "run"), "--out", str(root / "report")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"report: {root / 'report' / 'report.html'}"
    return root / "report"


def chromium() -> str:
    """The Chromium executable; fails (not skips) without it, since CI must run the browser checks."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("the report tests need Debian's Chromium: run `apt-get install -y chromium` as root")
    return found


def open_in_chromium(page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    return subprocess.run(
        [chromium(), *_CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )


def console_messages(stderr: str) -> list[str]:
    """What the page wrote to the console (``console.*`` calls and uncaught errors)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_report_writes_pngs_and_a_self_contained_page(report_dir: Path) -> None:
    from PIL import Image

    for name in ("ranks", "spectra", "convergence"):
        with Image.open(report_dir / f"{name}.png") as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
    page = (report_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)=["'](?!data:)""", page), "the page must not reference other files"
    embedded = re.search(r'<img id="ranks-chart"[^>]*src="data:image/png;base64,([^"]+)"', page)
    assert embedded is not None
    assert base64.b64decode(embedded.group(1)) == (report_dir / "ranks.png").read_bytes()


def test_convergence_curve_from_history_or_converged_at(make_model, make_batches, exact_fit_settings) -> None:
    state = eva_core.fit(make_model(0), make_batches(6), **exact_fit_settings)
    curve = convergence_curve(state)  # the fit's own per-check history
    assert curve.source == "history" and curve.steps == (1, 2, 3, 4, 5, 6)
    assert curve.converged == (0, 0, 0, 0, 0, len(state.layers))  # tau=0 converges every layer at min_steps=6
    del state.extra["history"]  # a state saved before histories were recorded
    rebuilt = convergence_curve(state)
    assert rebuilt.source == "converged_at" and (rebuilt.steps, rebuilt.converged) == (curve.steps, curve.converged)


def test_chromium_loads_the_page_without_console_messages(report_dir: Path, tmp_path: Path) -> None:
    result = open_in_chromium(report_dir / "report.html", tmp_path, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_messages(result.stderr) == []
    dom = result.stdout
    chart = re.search(r"<img[^>]*\bid=\"ranks-chart\"[^>]*>", dom)
    assert chart is not None, dom[:2000]
    assert re.search(r'src="data:image/png;base64,[A-Za-z0-9+/]{1000,}', chart.group(0))
    assert 'data-loaded="true"' in chart.group(0), "Chromium could not decode the rank chart"
    assert 'data-loaded="false"' not in dom


def test_chromium_screenshot_shows_the_rank_chart(report_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "shot.png"
    result = open_in_chromium(report_dir / "report.html", tmp_path, "--window-size=1280,1000", f"--screenshot={shot}")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = image.convert("RGB")
        colors = pixels.getcolors(maxcolors=1 << 20) or []
        blue = sum(count for count, (r, g, b) in colors if b > 150 and r < 90 and 90 < g < 160)  # the rank bars
    assert len(colors) > 50, "the screenshot is blank"
    assert blue > 2000, "no rank bars visible in the first screen"


def test_the_console_check_catches_a_page_error(tmp_path: Path) -> None:
    """The check above is not vacuous: a page that logs an error is caught."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><script>console.error("boom"); missing();</script></body></html>')
    messages = console_messages(open_in_chromium(page, tmp_path, "--dump-dom").stderr)
    assert any("boom" in m for m in messages) and any("missing is not defined" in m for m in messages)


def test_the_page_marks_a_broken_chart(report_dir: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    text = (report_dir / "report.html").read_text()
    page.write_text(re.sub(r'(id="ranks-chart"[^>]*src="data:image/png;base64,)[^"]+', r"\1AAAA", text, count=1))
    dom = open_in_chromium(page, tmp_path, "--dump-dom").stdout
    assert 'data-loaded="false"' in dom and "This chart failed to load: Ranks per layer" in dom


def test_report_png_decodes(report_dir: Path) -> None:
    from PIL import Image

    data = (report_dir / "convergence.png").read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
