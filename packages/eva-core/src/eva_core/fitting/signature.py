"""What a checkpoint records of the fit that wrote it, so that a resume refuses another fit's checkpoint:
the config, and the targeted layers' types, input widths and a cheap fingerprint of their weights."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..capture import input_width
from ..errors import CheckpointMismatchError

if TYPE_CHECKING:
    from ..config import EvaConfig

__all__ = ["check_same", "config_json", "layer_signature"]

_IGNORED_FIELDS = ("progress",)  # config fields that do not change the result
_PROBES = 64  # weight entries per layer in the model's fingerprint


def layer_signature(layers: dict[str, nn.Module]) -> dict[str, list[Any]]:
    """layer name -> [type name, d_in, weight fingerprint]: what the model of a resumed fit must match."""
    return {name: [type(module).__name__, input_width(module), _fingerprint(module)] for name, module in layers.items()}


def _fingerprint(module: nn.Module) -> str:
    """A hash of ``_PROBES`` evenly strided entries of the module's weight: cheap (no full pass over the
    weight), yet a model with other weights (another seed, a fine-tuned copy) differs in all of them."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.is_meta or weight.numel() == 0:
        return "-"
    flat = weight.detach().reshape(-1)  # (numel,)
    index = torch.linspace(0, flat.numel() - 1, min(_PROBES, flat.numel()), dtype=torch.float64).round().long()
    values = flat[index.to(flat.device)].to("cpu", torch.float64).tolist()
    return hashlib.sha256(repr(values).encode()).hexdigest()[:16]


def check_same(
    path: Path, meta: dict[str, Any], config: EvaConfig, signature: dict[str, list[Any]], world: int
) -> None:
    """Refuse to resume from checkpoint ``path`` (metadata ``meta``) written by another fit.

    Raises:
        CheckpointMismatchError: its world size, config (but ``progress``), targeted layers (types and
            widths) or their weights' fingerprints differ from this fit's.
    """
    if meta["world_size"] != world:
        raise CheckpointMismatchError(
            f"{path} was written by a fit on {meta['world_size']} process(es) but this fit runs on {world}; "
            "resume with the same number of processes."
        )
    now = config_json(config)
    # a field the writer's eva-core did not have yet (target_error, added after 0.1.0) had its default's effect
    saved = {**_defaults(config, now), **meta["config"]}
    kept = _kept_from_checkpoint(meta["config"], now)
    changed = sorted(key for key in set(saved) | set(now) if key not in kept and saved.get(key) != now.get(key))
    if changed:
        detail = ", ".join(f"{key}={saved.get(key)!r} there but {now.get(key)!r} now" for key in changed)
        raise CheckpointMismatchError(
            f"{path} was written by a fit with a different config ({detail}); resume with the same settings "
            "or start afresh (resume=False, or another checkpoint_dir)."
        )
    old, new = meta["layers"], signature
    if {name: value[:2] for name, value in old.items()} == {name: value[:2] for name, value in new.items()}:
        differing = [name for name in new if len(old[name]) > 2 and old[name][2] != new[name][2]]
        if differing:
            raise CheckpointMismatchError(
                f"{path} was written for a model with other weights: the weights of {len(differing)} targeted "
                f"layer(s) differ ({', '.join(differing[:3])}); resume with the same model and weights, or start "
                "afresh in another checkpoint_dir."
            )
        return
    if old != new:
        differing = sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
        detail = ", ".join(f"{name}: {old.get(name)} there, {new.get(name)} now" for name in differing[:5])
        raise CheckpointMismatchError(
            f"{path} was written for a different model: its targeted layers differ ({detail}); resume with "
            "the same model, or start afresh (resume=False, or another checkpoint_dir)."
        )


def _kept_from_checkpoint(saved: dict[str, Any], now: dict[str, Any]) -> set[str]:
    """The fields that only choose each layer's statistics kind, which a resumed fit takes from its
    checkpoint, and that this fit leaves open: ``gram_memory_bytes=None`` (whatever the free memory is now)
    and ``statistics`` when the checkpoint predates it (its fit chose as ``"exact"`` does)."""
    kept = {"gram_memory_bytes"} if now.get("gram_memory_bytes") is None else set()
    return kept | ({"statistics"} if "statistics" not in saved else set())


def _defaults(config: EvaConfig, now: dict[str, Any]) -> dict[str, Any]:
    """The default of every field of ``now`` that has one, as :func:`config_json` writes it."""
    fields = {field.name: field for field in dataclasses.fields(config)}
    return {
        name: json.loads(json.dumps(fields[name].default))
        for name in now
        if name in fields and fields[name].default is not dataclasses.MISSING
    }


def config_json(config: EvaConfig) -> dict[str, Any]:
    """The config as a checkpoint stores it: JSON values, less the fields that do not change the result."""
    data = dataclasses.asdict(config)
    for name in _IGNORED_FIELDS:
        data.pop(name, None)
    if isinstance(data["target_modules"], tuple):
        data["target_modules"] = list(data["target_modules"])
    return json.loads(json.dumps(data))
