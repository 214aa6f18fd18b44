"""``python -m eva_core.cli``: the same as the ``eva-lora`` script and ``python -m eva_core``."""

from __future__ import annotations

from .main import main

raise SystemExit(main())
