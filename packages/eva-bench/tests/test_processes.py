"""The reports' process pool: a SIGTERM to the parent stops its children too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_PARENT = """
import sys, time
from pathlib import Path
from eva_bench.processes import ProcessPool
folder = Path(sys.argv[1])
with ProcessPool() as pool:
    pool.start("child", [sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(60)"],
               folder / "child.log")
    (folder / "started").write_text("")
    while True:
        pool.finished(0.05)
"""


def test_a_terminated_parent_terminates_its_children(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(tmp_path)], env={**os.environ})
    log = tmp_path / "child.log"
    deadline = time.monotonic() + 60
    while not (log.is_file() and log.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(log.read_text())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
