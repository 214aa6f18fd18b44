"""The ``eva-lora`` command line: ``eva-lora fit``, ``eva-lora report``, ``eva-lora plugins``, ``eva-lora reallocate``.

Domain packages extend ``eva-lora fit`` through the ``eva_cli_load_model`` and ``eva_cli_batches`` hooks
(:mod:`eva_core.hookspecs`). Run it as ``eva-lora ...``, ``python -m eva_core ...`` or ``python -m eva_core.cli ...``.
"""

from __future__ import annotations

from .main import main
from .parser import build_parser

__all__ = ["build_parser", "main"]
