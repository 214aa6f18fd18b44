"""The result of a fit: per-layer spectra and the rank each layer receives."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .config import EvaConfig
from .errors import MissingStateError, ReallocationError, StateFileError
from .ranks import allocate_layer_ranks, component_scores

__all__ = ["EvaState", "LayerSpectrum"]

_FORMAT, _LEGACY = "eva-state/2", "eva-state/1"
_META = "eva_state.json"  # the manifest; replacing it is the one commit point of a save
_LEGACY_TENSORS = "spectra.safetensors"  # eva-state/1 (read, and removed once superseded)
_SPECTRA = re.compile(r"spectra-[0-9a-f]{32}\.safetensors")  # a fresh name per save
_OURS = re.compile(rf"{_SPECTRA.pattern}|\.eva_state\.[0-9a-f]{{32}}\.json\.tmp")
_SPECTRUM = ("components", "singular_values", "explained_variance", "explained_variance_ratio")


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
        short = [name for name, layer in self.layers.items() if _truncated(layer, config.max_components)]
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
        return read_state(cls, Path(path), device)


def _truncated(layer: LayerSpectrum, cap: int) -> bool:
    """Whether ``layer`` stores fewer components than a fit with cap ``cap`` would have kept: fewer than
    ``cap`` although its width and rows (less one, for centring) allow more."""
    k, width = layer.components.shape[0], layer.components.shape[-1]
    return k < min(cap, width, max(layer.rows - 1, 0))


# writing ----------------------------------------------------------------------------------------------
def write_state(state: EvaState, folder: Path) -> Path:
    """:meth:`EvaState.save`: check and serialise everything, write the spectra under a fresh name, then
    commit by replacing the manifest; superseded files of ours are removed only after the commit."""
    where = f"EvaState.save(path={str(folder)!r})"
    check_state(state.layers, state.ranks, state.config, where)
    meta = _manifest(state)
    _to_json(meta, where)  # fails on a value JSON cannot store before anything is written
    previous = _previous_spectra(folder, where)
    if folder.exists() and not folder.is_dir():
        raise StateFileError(f"{where}: {folder} is a file, not a folder; pass a folder to save into.")
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    spectra, manifest = folder / f"spectra-{token}.safetensors", folder / f".eva_state.{token}.json.tmp"
    try:
        data = save_tensors(_tensors(state))
        _write_durably(spectra, data)
        meta.update(tensors=spectra.name, sha256=hashlib.sha256(data).hexdigest())
        _write_durably(manifest, _to_json(meta, where).encode())
        os.replace(manifest, folder / _META)  # the commit point
    except BaseException:
        for path in (manifest, spectra):
            _remove_quietly(path)
        raise
    _sync_folder(folder)
    for path in folder.iterdir():  # superseded spectra, and leftovers of saves killed before their commit
        if path != spectra and (path.name == previous or _OURS.fullmatch(path.name)):
            _remove_quietly(path)
    return folder


def _manifest(state: EvaState) -> dict[str, Any]:
    return {
        "format": _FORMAT,
        "steps": state.steps,
        "seconds": state.seconds,
        "config": _config_to_json(state.config),
        "ranks": state.ranks,
        "layers": {
            name: {
                "rows": layer.rows,
                "converged": layer.converged,
                "converged_at": layer.converged_at,
                "source": layer.source,
            }
            for name, layer in state.layers.items()
        },
        "extra": state.extra,
    }


def _tensors(state: EvaState) -> dict[str, torch.Tensor]:
    """One copy of each measured input's spectrum (followers share their source's), in its own dtype."""
    return {
        f"{name}.{key}": getattr(layer, key).detach().to("cpu").contiguous()
        for name, layer in state.layers.items()
        if layer.source == name
        for key in _SPECTRUM
    }


def _to_json(meta: dict[str, Any], where: str) -> str:
    try:
        return json.dumps(meta, indent=2, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise StateFileError(
            f"{where}: the state holds a value JSON cannot store ({error}); state.extra must hold only "
            "str, int, float (finite), bool, None, lists and dicts: convert the value (e.g. str(path)) or "
            "drop it. Nothing was written."
        ) from error


def _previous_spectra(folder: Path, where: str) -> str | None:
    """The spectra file the folder's current manifest names (ours to remove once superseded).

    Raises:
        StateFileError: the folder holds an ``eva_state.json`` that is not an EVA state's manifest.
    """
    if not (folder / _META).exists():
        return None
    try:
        meta = json.loads((folder / _META).read_text())
        kind = meta["format"]
    except (OSError, ValueError, TypeError, KeyError) as error:
        kind, meta = repr(error), {}
    if kind == _LEGACY:
        return _LEGACY_TENSORS
    if kind == _FORMAT and isinstance(meta.get("tensors"), str) and _SPECTRA.fullmatch(meta["tensors"]):
        return str(meta["tensors"])
    raise StateFileError(
        f"{where}: {folder / _META} is not a state EvaState.save wrote ({kind}); it is left as it is. "
        "Save to another folder, or remove that file yourself."
    )


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "xb") as handle:  # a fresh name: never another file's bytes
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


# reading and checking -------------------------------------------------------------------------------
def read_state(cls: type[EvaState], folder: Path, device: torch.device | str) -> EvaState:
    """:meth:`EvaState.load`: read the manifest and the spectra it names, then check them."""
    meta_path = folder / _META
    if not meta_path.is_file():
        raise MissingStateError(
            f"EvaState.load(path={str(folder)!r}): no {_META} there; pass the folder given to save()."
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StateFileError(f"{meta_path} is corrupt or truncated ({error}); save the state again.") from error
    kind = meta.get("format") if isinstance(meta, dict) else None
    if kind not in (_FORMAT, _LEGACY):
        raise StateFileError(f"{meta_path} has format {kind!r}; this eva-core reads {_FORMAT!r} and {_LEGACY!r}.")
    name = _LEGACY_TENSORS if kind == _LEGACY else meta.get("tensors")
    if not isinstance(name, str) or not (name == _LEGACY_TENSORS or _SPECTRA.fullmatch(name)):
        raise StateFileError(
            f"{meta_path} names no spectra file save() writes (tensors={name!r}); save the state again."
        )
    spectra_path = folder / name
    tensors = _read_spectra(spectra_path, meta_path, meta.get("sha256"))
    try:
        layers = {name: _layer(name, info, tensors) for name, info in meta["layers"].items()}
        state = cls(
            layers=layers,
            ranks={str(k): _integer(v) for k, v in meta["ranks"].items()},
            steps=_integer(meta["steps"]),
            config=_config_from_json(meta["config"]),
            seconds=float(meta.get("seconds", 0.0)),
            extra=dict(meta.get("extra", {})),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:  # InvalidConfigError is a ValueError
        raise StateFileError(
            f"{meta_path} does not describe a state ({type(error).__name__}: {error}); save the state again."
        ) from error
    check_state(state.layers, state.ranks, state.config, f"{meta_path} (with {spectra_path.name})")
    state.layers = {name: _moved(layer, device) for name, layer in state.layers.items()}
    return state


def _read_spectra(path: Path, meta_path: Path, sha256: object) -> dict[str, torch.Tensor]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise StateFileError(
            f"{path}, named by {meta_path}, cannot be read ({error}); save the state again."
        ) from error
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise StateFileError(f"{path} is not the file {_META} was saved with (checksum differs); save the state again.")
    try:
        return load_tensors(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise StateFileError(f"{path} is corrupt or truncated ({error}); save the state again.") from error


def _layer(name: str, info: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> LayerSpectrum:
    source = str(info["source"])
    missing = [key for key in _SPECTRUM if f"{source}.{key}" not in tensors]
    if missing:
        raise KeyError(f"layer {name!r}: no {source}.{missing[0]} in the spectra")
    at = info["converged_at"]
    values = {key: tensors[f"{source}.{key}"] for key in _SPECTRUM}
    return LayerSpectrum(
        **values,
        rows=_integer(info["rows"]),
        converged=bool(info["converged"]),
        converged_at=None if at is None else _integer(at),
        source=source,
    )


def _moved(layer: LayerSpectrum, device: torch.device | str) -> LayerSpectrum:
    return LayerSpectrum(
        **{key: getattr(layer, key).to(device) for key in _SPECTRUM},
        rows=layer.rows,
        converged=layer.converged,
        converged_at=layer.converged_at,
        source=layer.source,
    )


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def check_state(layers: Mapping[str, LayerSpectrum], ranks: Mapping[str, int], config: EvaConfig, where: str) -> None:
    """Refuse what no fit produces: layers without ranks or ranks without layers, spectra that are not
    finite floating point or not shaped (k, d_in) and (k,), ranks over a layer's cap or over the budget.

    Raises:
        StateFileError: naming ``where`` (the file or the call), the layer and the fix.
    """
    fix = "the file was altered or is not from this state; save the state again (or fit again)"
    for name in [n for n in ranks if n not in layers] + [n for n in layers if n not in ranks]:
        detail = "has a rank but no spectrum" if name not in layers else "has a spectrum but no rank entry"
        raise StateFileError(f"{where}: layer {name!r} {detail}; {fix}.")
    for name, layer in layers.items():
        problem = _spectrum_problem(layer, layers)
        cap = min(config.max_components, layer.components.shape[0])
        if problem is None and not 0 <= ranks[name] <= cap:
            problem = (
                f"rank {ranks[name]} outside 0..{cap} (rho cap {config.max_components}, "
                f"{layer.components.shape[0]} components stored)"
            )
        if problem is not None:
            raise StateFileError(f"{where}: layer {name!r}: {problem}; {fix}.")
    if sum(ranks.values()) > config.rank * len(layers):
        raise StateFileError(
            f"{where}: the ranks sum to {sum(ranks.values())}, over the budget rank x layers = "
            f"{config.rank} x {len(layers)}; {fix}, or call state.reallocate() to re-budget."
        )


def _spectrum_problem(layer: LayerSpectrum, layers: Mapping[str, LayerSpectrum]) -> str | None:
    """What is wrong with one layer's spectrum, or None."""
    values = [getattr(layer, key) for key in _SPECTRUM]
    if not all(isinstance(value, torch.Tensor) for value in values):
        return "a spectrum field is not a tensor"
    components = values[0]
    if components.ndim != 2 or any(value.shape != components.shape[:1] for value in values[1:]):
        return f"spectrum shapes {[tuple(value.shape) for value in values]} are not (k, d_in), (k,), (k,), (k,)"
    for key, value in zip(_SPECTRUM, values, strict=True):
        if not value.is_floating_point():
            return f"{key} has dtype {value.dtype}, not floating point"
        if not bool(torch.isfinite(value).all()):
            return f"{key} holds NaN or infinity"
    if layer.source not in layers or layers[layer.source].source != layer.source:
        return f"its input source {layer.source!r} is not a measured layer of this state"
    if layer.rows < 0:
        return f"rows={layer.rows} is negative"
    return None


def _config_to_json(config: EvaConfig) -> dict[str, Any]:
    data = asdict(config)
    if isinstance(data["target_modules"], tuple):
        data["target_modules"] = list(data["target_modules"])
    return data


def _config_from_json(data: Mapping[str, Any]) -> EvaConfig:
    return EvaConfig(**dict(data))
