"""The on-disk format of an :class:`~eva_core.EvaState` (``eva-state/2``): writing it all or nothing,
reading it back, and checking that it holds what a fit produces.

A state folder holds ``eva_state.json`` (the manifest: config, ranks, per-layer records, ``extra``, and
the name and sha256 of its spectra file) and ``spectra-<token>.safetensors`` (one copy of each measured
input's spectrum). This module imports neither :mod:`.state` (an import cycle) nor :mod:`.config` (a layer
more in the import graph): it works on anything shaped like a state, a layer spectrum and a config, and
``read_state`` is handed the classes to build.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .durable_files import remove_quietly, sync_folder, write_new
from .errors import MissingStateError, StateFileError

__all__ = ["check_state", "read_state", "write_state"]

_FORMAT, _LEGACY = "eva-state/2", "eva-state/1"
_META = "eva_state.json"  # the manifest; replacing it is the one commit point of a save
_LEGACY_TENSORS = "spectra.safetensors"  # eva-state/1 (read, and removed once superseded)
_SPECTRA = re.compile(r"spectra-[0-9a-f]{32}\.safetensors")  # a fresh name per save
_OURS = re.compile(rf"{_SPECTRA.pattern}|\.eva_state\.[0-9a-f]{{32}}\.json\.tmp")
_SPECTRUM = ("components", "singular_values", "explained_variance", "explained_variance_ratio")


class Budget(Protocol):
    """What this module reads of an :class:`~eva_core.EvaConfig` (a dataclass, stored as JSON)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def rank(self) -> int: ...
    @property
    def max_components(self) -> int: ...


class Spectrum(Protocol):
    """What this module reads of a :class:`~eva_core.LayerSpectrum`."""

    @property
    def components(self) -> torch.Tensor: ...
    @property
    def explained_variance(self) -> torch.Tensor: ...
    @property
    def rows(self) -> int: ...
    @property
    def converged(self) -> bool: ...
    @property
    def converged_at(self) -> int | None: ...
    @property
    def source(self) -> str: ...


class State(Protocol):
    """What this module reads of an :class:`~eva_core.EvaState`."""

    @property
    def layers(self) -> Mapping[str, Spectrum]: ...
    @property
    def ranks(self) -> Mapping[str, int]: ...
    @property
    def steps(self) -> int: ...
    @property
    def config(self) -> Budget: ...
    @property
    def seconds(self) -> float: ...
    @property
    def extra(self) -> dict[str, Any]: ...


S = TypeVar("S")
L = TypeVar("L", bound=Spectrum)


# writing ----------------------------------------------------------------------------------------------
def write_state(state: State, folder: Path) -> Path:
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
        write_new(spectra, data)
        meta.update(tensors=spectra.name, sha256=hashlib.sha256(data).hexdigest())
        write_new(manifest, _to_json(meta, where).encode())
        os.replace(manifest, folder / _META)  # the commit point
    except BaseException:
        for path in (manifest, spectra):
            remove_quietly(path)
        raise
    sync_folder(folder)
    for path in folder.iterdir():  # superseded spectra, and leftovers of saves killed before their commit
        if path != spectra and (path.name == previous or _OURS.fullmatch(path.name)):
            remove_quietly(path)
    return folder


def _manifest(state: State) -> dict[str, Any]:
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


def _tensors(state: State) -> dict[str, torch.Tensor]:
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


# reading and checking -------------------------------------------------------------------------------
def read_state(
    cls: Callable[..., S],
    spectrum: Callable[..., L],
    settings: Callable[..., Budget],
    folder: Path,
    device: torch.device | str,
) -> S:
    """:meth:`EvaState.load`: read the manifest and the spectra it names, check them, and build the state
    (``cls``: :class:`~eva_core.EvaState`) from layer spectra (``spectrum``: :class:`~eva_core.LayerSpectrum`)
    and its config (``settings``: :class:`~eva_core.EvaConfig`)."""
    meta_path = folder / _META
    meta, spectra_path = _manifest_at(folder)
    tensors = _read_spectra(spectra_path, meta_path, meta.get("sha256"))
    try:
        layers = {name: _layer(spectrum, name, info, tensors) for name, info in meta["layers"].items()}
        ranks = {str(k): _integer(v) for k, v in meta["ranks"].items()}
        config = settings(**dict(meta["config"]))
        fields = {"steps": _integer(meta["steps"]), "seconds": float(meta.get("seconds", 0.0)),
                  "extra": dict(meta.get("extra", {}))}  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError) as error:  # InvalidConfigError is a ValueError
        raise StateFileError(
            f"{meta_path} does not describe a state ({type(error).__name__}: {error}); save the state again."
        ) from error
    check_state(layers, ranks, config, f"{meta_path} (with {spectra_path.name})")
    moved = {name: _moved(spectrum, layer, device) for name, layer in layers.items()}
    return cls(layers=moved, ranks=ranks, config=config, **fields)


def _manifest_at(folder: Path) -> tuple[dict[str, Any], Path]:
    """The manifest in ``folder`` and the spectra file it names, both checked to be ours."""
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
    return meta, folder / name


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


def _layer(spectrum: Callable[..., L], name: str, info: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> L:
    source = str(info["source"])
    missing = [key for key in _SPECTRUM if f"{source}.{key}" not in tensors]
    if missing:
        raise KeyError(f"layer {name!r}: no {source}.{missing[0]} in the spectra")
    at = info["converged_at"]
    values = {key: tensors[f"{source}.{key}"] for key in _SPECTRUM}
    return spectrum(
        **values,
        rows=_integer(info["rows"]),
        converged=bool(info["converged"]),
        converged_at=None if at is None else _integer(at),
        source=source,
    )


def _moved(spectrum: Callable[..., L], layer: L, device: torch.device | str) -> L:
    return spectrum(
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


def check_state(layers: Mapping[str, Spectrum], ranks: Mapping[str, int], config: Budget, where: str) -> None:
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


def _spectrum_problem(layer: Spectrum, layers: Mapping[str, Spectrum]) -> str | None:
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


def _config_to_json(config: Budget) -> dict[str, Any]:
    data = asdict(config)
    if isinstance(data["target_modules"], tuple):
        data["target_modules"] = list(data["target_modules"])
    return data
