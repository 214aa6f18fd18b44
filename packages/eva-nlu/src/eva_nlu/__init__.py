"""eva-nlu: EVA for encoders on GLUE-style tasks (BERT/MiniLM, RoBERTa, DeBERTa-v2/v3, MPNet, ELECTRA).

``eva_nlu.init(model, loader)`` EVA-initializes LoRA on the encoder blocks and trains the task head in
full. ``load_model`` loads an encoder with a head sized for a GLUE task (``minilm`` is shipped offline),
``read_rows`` reads the text of a GLUE-style ``.tsv``/``.csv``/``.jsonl`` file and ``batches`` tokenizes
rows into padded batches, as ``eva-lora fit`` does.
"""

from __future__ import annotations

from .batches import batches
from .cli import load_model
from .glue import read_rows
from .initialization import init

__version__ = "0.1.0"

__all__ = ["batches", "init", "load_model", "read_rows"]
