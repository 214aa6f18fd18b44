"""The result of a fit: per-layer spectra and the rank each layer receives (its files: :mod:`.state_file`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import EvaConfig
from .errors import ReallocationError
from .ranks import allocate_layer_ranks, component_scores
from .state_file import read_state, write_state

__all__ = ["EvaState", "LayerSpectrum"]


@dataclass(frozen=True)
class LayerSpectrum:
    """What the fit measured for one layer.

    Attributes:
        components: (k, d_in) principal directions of the layer's input rows, by decreasing singular value.
        singular_values: (k,).
        explained_variance: (k,) variance along each component.
        explained_variance_ratio: (k,) share of the layer's total input variance.
        rows: N, the rows the statistics were built from.
        converged: whether its allocated components met the stopping rule (``EvaConfig.stopping``) before the
            fit ended.
        converged_at: the number of batches consumed when it converged, else ``None``.
        source: the layer whose input was measured (itself, or the layer it shares the input with).
    """

    components: torch.Tensor
    singular_values: torch.Tensor
    explained_variance: torch.Tensor
    explained_variance_ratio: torch.Tensor
    rows: int
    converged: bool
    converged_at: int | None
    source: str

    def score(self, metric: str) -> torch.Tensor:
        """(k,) the per-component score ``metric`` ranks layers by."""
        return component_scores(self.explained_variance, self.explained_variance_ratio, metric)


@dataclass
class EvaState:
    """Per-layer spectra (``layers``), allocated ranks (``ranks``) and the batches consumed (``steps``).

    ``layers`` and ``ranks`` are keyed by names as in ``model.named_modules()``, in model order.
    """

    layers: dict[str, LayerSpectrum]
    ranks: dict[str, int]
    steps: int
    config: EvaConfig
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def not_converged(self) -> list[str]:
        """Layers whose allocated components had not met the stopping rule when the fit ended."""
        return [name for name, layer in self.layers.items() if not layer.converged]

    def components(self, name: str, whiten: bool | None = None) -> torch.Tensor:
        """(ranks[name], d_in) the LoRA ``A`` rows for layer ``name`` (whitened if the config asks)."""
        layer, rank = self.layers[name], self.ranks[name]
        rows = layer.components[:rank]
        if self.config.whiten if whiten is None else whiten:
            std = layer.explained_variance[:rank].clamp_min(torch.finfo(rows.dtype).tiny).sqrt()
            rows = rows / std[:, None]
        return rows

    def reallocate(
        self, rank: int | None = None, rho: float | None = None, redistribution: str | None = None
    ) -> EvaState:
        """A new state with ranks re-budgeted from the saved spectra; no data needed.

        Reallocation is bounded by the components *stored* (not by this state's own rank and rho): a state
        reallocated down keeps every component of the fit, so it can be reallocated back up.

        Raises:
            ReallocationError: the new ``round(rho * rank)`` exceeds the components stored for some layer.
        """
        changes: dict[str, object] = {}
        if rank is not None:
            changes["rank"] = rank
        if rho is not None:
            changes["rho"] = rho
        if redistribution is not None:
            changes["redistribution"] = redistribution
        config = self.config.replace(**changes)
        fitted = max((layer.components.shape[0] for layer in self.layers.values()), default=0)
        short = [name for name, layer in self.layers.items() if _truncated(layer, config.max_components, fitted)]
        if short:
            stored = {name: self.layers[name].components.shape[0] for name in short}
            kept = max(layer.components.shape[0] for layer in self.layers.values())
            raise ReallocationError(
                f"reallocate(rank={config.rank}, rho={config.rho}) needs up to {config.max_components} "
                f"components per layer but this state stores at most {kept} per layer ({len(short)} layer(s) "
                f"fall short, e.g. {short[0]!r} with {stored[short[0]]}); lower rank or rho so that "
                f"round(rho * rank) <= {kept}, or fit again with a larger rank*rho."
            )
        return EvaState(
            layers=dict(self.layers),
            ranks=allocate_layer_ranks(self.layers, config),
            steps=self.steps,
            config=config,
            seconds=self.seconds,
            extra=dict(self.extra),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the state to folder ``path``, all or nothing: safetensors (one copy per measured input)
        plus ``eva_state.json``, which names the safetensors file it belongs to.

        Everything is checked and serialised before the first byte is written; the new files are written
        under fresh names, flushed to disk, and one ``os.replace`` of ``eva_state.json`` commits them.
        Whatever fails, at any point (an error, a kill, a full disk), the folder holds either its previous
        state or the new one, complete. Files that are not ours are never overwritten or removed.

        Raises:
            StateFileError: the state holds what cannot be saved (a value JSON cannot store in ``extra``,
                NaN components, ranks over the budget), or ``path`` holds an ``eva_state.json`` not ours.
            OSError: the disk refused a write (full, read-only); the folder is as it was.
        """
        return write_state(self, Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: torch.device | str = "cpu") -> EvaState:
        """Read a state written by :meth:`save` (no pickle involved), checking it as a fit would make it.

        Raises:
            MissingStateError: ``path`` holds no ``eva_state.json``.
            StateFileError: a file is corrupt or truncated, or holds what a fit cannot produce (NaN or
                integer components, ranks over the budget or a layer's cap, a layer without a rank).
        """
        return read_state(cls, LayerSpectrum, EvaConfig, Path(path), device)


def _truncated(layer: LayerSpectrum, cap: int, fitted: int) -> bool:
    """Whether ``layer`` stores fewer components than a fit with cap ``cap`` would have kept: it was cut at
    the fit's own cap (it stores ``fitted``, the most any layer stores; a layer storing fewer kept every
    component with variance) and its width and rows (less one, for centring) allow more than that."""
    k, width = layer.components.shape[0], layer.components.shape[-1]
    return k == fitted and k < min(cap, width, max(layer.rows - 1, 0))
