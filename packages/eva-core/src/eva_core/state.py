"""The result of a fit: per-layer spectra and the rank each layer receives."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import EvaConfig
from .errors import ReallocationError
from .ranks import allocate_layer_ranks, component_scores

__all__ = ["EvaState", "LayerSpectrum"]

_FORMAT = "eva-state/1"
_TENSORS = "spectra.safetensors"
_META = "eva_state.json"


@dataclass(frozen=True)
class LayerSpectrum:
    """What the fit measured for one layer.

    Attributes:
        components: (k, d_in) principal directions of the layer's input rows, by decreasing singular value.
        singular_values: (k,).
        explained_variance: (k,) variance along each component.
        explained_variance_ratio: (k,) share of the layer's total input variance.
        rows: N, the rows the statistics were built from.
        converged: whether its allocated components stopped moving (cos >= tau) before the fit ended.
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
        """Layers whose allocated components had not stopped moving when the fit ended."""
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

        Raises:
            ReallocationError: the new ``round(rho * rank)`` exceeds the components that were saved.
        """
        changes: dict[str, object] = {}
        if rank is not None:
            changes["rank"] = rank
        if rho is not None:
            changes["rho"] = rho
        if redistribution is not None:
            changes["redistribution"] = redistribution
        config = self.config.replace(**changes)
        stored = min((layer.components.shape[0] for layer in self.layers.values()), default=0)
        fitted_cap = self.config.max_components
        if config.max_components > fitted_cap:
            raise ReallocationError(
                f"reallocate(rank={config.rank}, rho={config.rho}) needs up to {config.max_components} "
                f"components per layer but the fit kept {fitted_cap} (rank={self.config.rank}, "
                f"rho={self.config.rho}, fewest stored: {stored}); lower rank or rho, or fit again with a "
                "larger rank*rho."
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
        """Write the state to folder ``path`` as safetensors (one copy per measured input) plus JSON."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for name, layer in self.layers.items():
            if layer.source != name:
                continue
            for key in ("components", "singular_values", "explained_variance", "explained_variance_ratio"):
                tensors[f"{name}.{key}"] = getattr(layer, key).detach().to("cpu", torch.float32).contiguous()
        save_file(tensors, str(folder / _TENSORS))
        meta = {
            "format": _FORMAT,
            "steps": self.steps,
            "seconds": self.seconds,
            "config": _config_to_json(self.config),
            "ranks": self.ranks,
            "layers": {
                name: {
                    "rows": layer.rows,
                    "converged": layer.converged,
                    "converged_at": layer.converged_at,
                    "source": layer.source,
                }
                for name, layer in self.layers.items()
            },
            "extra": self.extra,
        }
        (folder / _META).write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: torch.device | str = "cpu") -> EvaState:
        """Read a state written by :meth:`save` (no pickle involved)."""
        folder = Path(path)
        meta_path = folder / _META
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"EvaState.load(path={str(path)!r}): no {_META} there; pass the folder given to save()."
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{meta_path} has format {meta.get('format')!r}; this eva-core reads {_FORMAT!r}.")
        tensors = load_file(str(folder / _TENSORS), device=str(device))
        layers = {}
        for name, info in meta["layers"].items():
            src = info["source"]
            layers[name] = LayerSpectrum(
                components=tensors[f"{src}.components"],
                singular_values=tensors[f"{src}.singular_values"],
                explained_variance=tensors[f"{src}.explained_variance"],
                explained_variance_ratio=tensors[f"{src}.explained_variance_ratio"],
                rows=int(info["rows"]),
                converged=bool(info["converged"]),
                converged_at=info["converged_at"],
                source=src,
            )
        return cls(
            layers=layers,
            ranks={k: int(v) for k, v in meta["ranks"].items()},
            steps=int(meta["steps"]),
            config=_config_from_json(meta["config"]),
            seconds=float(meta.get("seconds", 0.0)),
            extra=dict(meta.get("extra", {})),
        )


def _config_to_json(config: EvaConfig) -> dict[str, Any]:
    data = asdict(config)
    if isinstance(data["target_modules"], tuple):
        data["target_modules"] = list(data["target_modules"])
    return data


def _config_from_json(data: Mapping[str, Any]) -> EvaConfig:
    return EvaConfig(**dict(data))
