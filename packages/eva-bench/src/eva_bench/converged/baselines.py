"""What a classifier that learned nothing scores on each classification task's held-out split: the
majority-class baselines beside the converged report (``<out>/baselines.json``), computed once from the
held-out labels and committed with the cache, so the page that reads them stays a function of files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from eva_core.durable_files import replace_atomically

from .protocol import TaskProtocol

__all__ = ["BASELINES_FILE", "majority_score", "read_baselines", "write_baselines"]

BASELINES_FILE = "baselines.json"


def majority_score(protocol: TaskProtocol) -> float | None:
    """The held-out headline metric of always predicting the most common held-out class (on a tie the
    smaller class id); ``None`` for a task that is not classification (rl, llm)."""
    settings = protocol.finetune
    if protocol.domain == "nlu":
        from ..nlu import labelled_rows, shared_glue_path
        from ..nlu.metrics import majority_baseline

        rows = labelled_rows(
            shared_glue_path(settings["task"], "dev"), settings["task"], limit=settings.get("dev_limit")
        )
        return majority_baseline(settings["task"], rows)[protocol.metric]
    if protocol.domain == "vision" and protocol.metric == "accuracy":
        from ..vision.tasks import get_task

        labels = get_task(settings["task"]).load("dev", settings.get("dev_limit"))[1].tolist()
        return max(labels.count(label) for label in set(labels)) / len(labels)
    return None


def write_baselines(out: Path, protocols: Sequence[TaskProtocol]) -> Path:
    """Compute every task's baseline and write ``<out>/baselines.json`` atomically; returns its path."""
    scores = {p.name: score for p in protocols if (score := majority_score(p)) is not None}
    path = out / BASELINES_FILE
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(scores, indent=1, sort_keys=True) + "\n"

    def write(temporary: Path) -> None:
        temporary.write_text(text)

    replace_atomically(path, write)
    return path


def read_baselines(out: Path) -> dict[str, float]:
    """The committed baselines by task name (empty when the file was never written)."""
    path = out / BASELINES_FILE
    return {name: float(value) for name, value in json.loads(path.read_text()).items()} if path.is_file() else {}
