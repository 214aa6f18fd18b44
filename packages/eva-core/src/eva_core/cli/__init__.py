"""The ``eva`` command line: ``eva fit``, ``eva report``, ``eva plugins``, ``eva reallocate``.

Domain packages extend ``eva fit`` through the ``eva_cli_load_model`` and ``eva_cli_batches`` hooks
(:mod:`eva_core.hookspecs`). Run it as ``eva ...`` or ``python -m eva_core.cli ...``.
"""

from __future__ import annotations

from .main import main
from .parser import build_parser

__all__ = ["build_parser", "main"]
