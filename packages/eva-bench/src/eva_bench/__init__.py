"""eva-bench: the comparison harness of the EVA packages (never published; the libraries never import it).

``initialize(model, method, batches, ...)`` builds any LoRA initialization of the EVA paper by name;
``recipe.run(task, method, ...)`` initializes, trains with :func:`train` (accelerate) and returns a
:class:`RunRecord`; each domain's subpackage (``eva_bench.nlu``, ``.llm``, ``.vision``, ``.rl``) prepares
its tasks, data, metrics and locally pretrained models.
"""

from __future__ import annotations

from .cost import Cost, measure_cost
from .initializations import ALL_METHODS, EVA_VARIANTS, INIT_METHODS, initialize
from .recipe import Task, run
from .records import EvalPoint, RunRecord, eva_summary
from .training import shuffled_epochs, train

__all__ = [
    "ALL_METHODS",
    "EVA_VARIANTS",
    "INIT_METHODS",
    "Cost",
    "EvalPoint",
    "RunRecord",
    "Task",
    "eva_summary",
    "initialize",
    "measure_cost",
    "run",
    "shuffled_epochs",
    "train",
]
