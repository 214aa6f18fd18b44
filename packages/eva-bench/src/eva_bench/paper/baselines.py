"""What a run that learned nothing scores: the majority-class baseline of a cached nlu store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["majority"]


def majority(store: Mapping[str, Any]) -> float | None:
    """The headline metric of always predicting the majority class of the held-out rows a ``compare.py`` store's
    runs were scored on (the first ``dev_limit`` rows of the task's dev split, read from the shared data folder);
    ``None`` for a store without runs, outside the nlu domain, of a task not in :data:`eva_nlu.glue.TASKS`, or of a
    regression task.

    Raises:
        eva_core.errors.MissingDataError: the dev split is not in the shared data folder (``EVA_DATA_DIR``).
    """
    settings = store.get("meta", {}).get("settings", {})
    if settings.get("domain") != "nlu" or not store.get("runs"):
        return None
    from eva_nlu.glue import TASKS

    from ..nlu import labelled_rows, majority_baseline, shared_glue_path

    task = settings["task"]  # compare.py's --task: a canonical name (``mrpc``)
    if task not in TASKS or TASKS[task].is_regression:
        return None
    rows = labelled_rows(shared_glue_path(task, "dev"), task, limit=settings.get("dev_limit"))
    metric = next(iter(store["runs"].values()))["metric"]
    return majority_baseline(task, rows)[metric]
