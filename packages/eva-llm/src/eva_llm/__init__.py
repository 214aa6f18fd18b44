"""eva-llm: EVA (Explained Variance Adaptation) for decoder-only language models.

``eva_llm.init(model, loader)`` fits EVA on the answer tokens of a causal LM's batches and returns a
peft LoRA model; the ``llm`` plugin (:mod:`eva_llm.plugin`, registered under the ``eva`` entry-point
group) tells eva-core which layers of Llama, Gemma, Qwen2, Mistral and GPT-2 models to adapt and this
domain's defaults. :func:`qa_loader` / :class:`QACollator` turn question/answer problems into batches
with answer-only labels; :func:`load_causal_lm` and the packaged checkpoints (:func:`smollm2_checkpoint`,
:func:`gemma3_270m_checkpoint`, converted once from GGUF) load models offline, as ``eva-lora fit`` does.
"""

from __future__ import annotations

from .batches import QACollator, QAProblem, prompt_text, qa_loader
from .checkpoints import gemma3_270m_checkpoint, load_causal_lm, smollm2_checkpoint
from .cli import read_problems
from .errors import MissingCheckpointError
from .initialization import init

__version__ = "0.1.0"

__all__ = [
    "MissingCheckpointError",
    "QACollator",
    "QAProblem",
    "gemma3_270m_checkpoint",
    "init",
    "load_causal_lm",
    "prompt_text",
    "qa_loader",
    "read_problems",
    "smollm2_checkpoint",
]
