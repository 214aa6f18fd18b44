"""eva-core: Explained Variance Adaptation, a data-driven initialization of LoRA adapters.

``fit`` streams batches through a frozen model and measures, per targeted layer, the principal
directions of its inputs; ``apply`` builds a peft LoRA model whose ``A`` matrices are those directions
(``B = 0``) with ranks shared out by explained variance; ``init`` does both; ``plan`` predicts what a fit
will hold and cost from one example batch, even on a model without weights (the meta device). The domain
plugin that claims the model (``eva-nlu``, ``eva-llm``, ``eva-vision``, ``eva-rl``;
:mod:`eva_core.hookspecs` is their contract) chooses the layers, the rows and the defaults. Every error is an
:class:`EvaError`; the specific ones live in :mod:`eva_core.errors`.
"""

from __future__ import annotations

from .adapters import apply, lora_config_for
from .config import EvaConfig, RedistributionMetric
from .contract import LoadedModel, PreparedBatch, RowsFn, hookimpl, hookspec
from .errors import EvaError, EvaWarning
from .fitting import fit
from .initialization import init
from .planning import Plan, plan
from .plugins import PluginManager, plugin_manager
from .state import EvaState, LayerSpectrum

__version__ = "0.1.0"

__all__ = [
    "EvaConfig",
    "EvaError",
    "EvaState",
    "EvaWarning",
    "LayerSpectrum",
    "LoadedModel",
    "Plan",
    "PluginManager",
    "PreparedBatch",
    "RedistributionMetric",
    "RowsFn",
    "apply",
    "fit",
    "hookimpl",
    "hookspec",
    "init",
    "lora_config_for",
    "plan",
    "plugin_manager",
]
