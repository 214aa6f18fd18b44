"""eva-nlu: EVA for encoders on GLUE-style tasks (BERT/MiniLM, RoBERTa, DeBERTa-v2/v3, MPNet, ELECTRA).

``eva_nlu.init(model, loader)`` EVA-initializes LoRA on the encoder blocks and trains the task head in
full; ``eva_nlu.finetune(model, task, method, train=..., dev=...)`` runs the whole recipe (data, init
method, training, the task's GLUE metric).
"""

from __future__ import annotations

from .api import DEFAULTS, default_lora_config, init
from .batching import batches
from .metrics import glue_metrics
from .plugin import ENCODER_TYPES, head_modules, target_modules
from .recipe import evaluate, finetune, load_model
from .rows import DataFormatError, MissingDataError, read_rows, shared_glue_path
from .tasks import TASKS, GlueTask, get_task

__version__ = "0.1.0"

__all__ = [
    "DEFAULTS",
    "ENCODER_TYPES",
    "TASKS",
    "DataFormatError",
    "GlueTask",
    "MissingDataError",
    "batches",
    "default_lora_config",
    "evaluate",
    "finetune",
    "get_task",
    "glue_metrics",
    "head_modules",
    "init",
    "load_model",
    "read_rows",
    "shared_glue_path",
    "target_modules",
]
