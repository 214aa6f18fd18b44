"""eva-core: Explained Variance Adaptation, a data-driven initialization of LoRA adapters.

``fit`` streams batches through a frozen model and measures, per targeted layer, the principal
directions of its inputs; ``apply`` builds a peft LoRA model whose ``A`` matrices are those directions
(``B = 0``) with ranks shared out by explained variance; ``init`` does both.
"""

from __future__ import annotations

from .adapters import apply, lora_config_for
from .api import init
from .config import EvaConfig, RedistributionMetric
from .cost import Cost, measure_cost
from .errors import (
    AmbiguousDomainError,
    CheckpointMismatchError,
    DistributedFitError,
    EmptyDataError,
    EvaError,
    EvaWarning,
    InconsistentSharedInputError,
    InvalidConfigError,
    MissingDataError,
    NonFiniteActivationError,
    NoTargetLayersError,
    NotConvergedWarning,
    PluginLoadError,
    ReallocationError,
    TooFewRowsWarning,
    UnsupportedBatchError,
    UnsupportedLayerError,
)
from .fitting import fit
from .hookspecs import LoadedModel, PreparedBatch, RowsFn, hookimpl, hookspec
from .methods import ALL_METHODS, EVA_VARIANTS, INIT_METHODS, initialize
from .paths import cache_dir, data_dir
from .plugins import plugin_manager
from .ranks import allocate_ranks
from .runs import EvalPoint, RunRecord, eva_summary, shuffled_epochs, train
from .state import EvaState, LayerSpectrum

__version__ = "0.1.0"

__all__ = [
    "ALL_METHODS",
    "EVA_VARIANTS",
    "INIT_METHODS",
    "AmbiguousDomainError",
    "CheckpointMismatchError",
    "DistributedFitError",
    "EmptyDataError",
    "EvaConfig",
    "EvaError",
    "EvaState",
    "EvalPoint",
    "EvaWarning",
    "InconsistentSharedInputError",
    "InvalidConfigError",
    "MissingDataError",
    "LayerSpectrum",
    "LoadedModel",
    "NoTargetLayersError",
    "NonFiniteActivationError",
    "NotConvergedWarning",
    "PluginLoadError",
    "PreparedBatch",
    "ReallocationError",
    "RunRecord",
    "RedistributionMetric",
    "RowsFn",
    "TooFewRowsWarning",
    "UnsupportedBatchError",
    "UnsupportedLayerError",
    "Cost",
    "allocate_ranks",
    "apply",
    "cache_dir",
    "data_dir",
    "eva_summary",
    "fit",
    "hookimpl",
    "hookspec",
    "init",
    "initialize",
    "lora_config_for",
    "measure_cost",
    "plugin_manager",
    "shuffled_epochs",
    "train",
]
