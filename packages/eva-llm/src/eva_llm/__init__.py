"""eva-llm: EVA (Explained Variance Adaptation) for decoder-only language models.

``eva_llm.init(model, loader)`` fits EVA on the answer tokens of a causal LM's batches and returns a
peft LoRA model; the ``llm`` plugin (registered under the ``eva`` entry-point group) tells eva-core
which layers of Llama, Gemma, Qwen2, Mistral and GPT-2 models to adapt. :mod:`eva_llm.data` and
:mod:`eva_llm.batches` stream GSM8K-style problems, :mod:`eva_llm.recipe` fine-tunes and evaluates,
:mod:`eva_llm.checkpoints` loads offline GGUF checkpoints (SmolLM2-135M, Gemma-3-270M).
"""

from __future__ import annotations

from .api import DOMAIN, LLM_DEFAULTS, init, lora_config_for_model
from .architectures import is_causal_lm, target_modules
from .batches import IGNORE_INDEX, QACollator, answer_token_count, prompt_text, qa_loader
from .checkpoints import load_causal_lm, smollm2_checkpoint, smollm2_path
from .data import QAProblem, final_number, read_gsm8k
from .errors import MissingCheckpointError, MissingDataError
from .recipe import finetune

__version__ = "0.1.0"

__all__ = [
    "DOMAIN",
    "IGNORE_INDEX",
    "LLM_DEFAULTS",
    "MissingCheckpointError",
    "MissingDataError",
    "QACollator",
    "QAProblem",
    "answer_token_count",
    "final_number",
    "finetune",
    "init",
    "is_causal_lm",
    "load_causal_lm",
    "lora_config_for_model",
    "prompt_text",
    "qa_loader",
    "read_gsm8k",
    "smollm2_checkpoint",
    "smollm2_path",
    "target_modules",
]
