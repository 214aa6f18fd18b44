"""``python -m eva_core``: the ``eva-lora`` command line, for where the script is not on ``PATH``."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
