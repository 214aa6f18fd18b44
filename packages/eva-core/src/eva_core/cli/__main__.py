"""``python -m eva_core.cli``: the same as the ``eva`` script."""

from __future__ import annotations

from .main import main

raise SystemExit(main())
