"""Checkpoints of a running fit, so that a killed fit resumes where it stopped and ends as if never stopped.

Every ``every`` batches each rank writes one safetensors file (tensors: its layers' statistics, the
convergence record; header metadata: JSON with the config, the model's targeted layers, the recorder's
layout, the batches consumed)::

    <directory>/eva-fit.rank<r>-of<W>.step<NNNNNNNN>.safetensors

The file is written under a temporary name, flushed to disk and moved into place with ``os.replace``
(:func:`~eva_core.durable_files.replace_atomically`),
so a kill leaves either the old or the new checkpoint, never half of one; each rank keeps its two latest.
A fresh fit refuses a folder that already holds checkpoints (it never deletes what it did not write). A
resumed fit reads the latest step that every rank has and can read (an unreadable one is skipped, with a
warning, for the older one kept), checks that config, model (layer types, widths and a fingerprint of
their weights) and world size match, loads the statistics onto the devices the model is on now, and
skips the batches already consumed (the caller passes the same iterable, in the same order).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..durable_files import replace_atomically
from ..errors import CheckpointMismatchError, EvaWarning, InvalidConfigError, StateFileError, warn
from .signature import check_same, config_json, layer_signature

if TYPE_CHECKING:
    from ..capture import InputRecorder
    from ..config import EvaConfig
    from .costs import Kind, StatisticsChooser
    from .process_group import ProcessGroup
    from .spectra import ConvergenceTracker

__all__ = ["Checkpointing", "FitProgress", "layer_signature"]

_log = logging.getLogger(__name__)

_FORMAT = "eva-fit-checkpoint/1"
_NAME = re.compile(r"eva-fit\.rank(\d+)-of(\d+)\.step(\d+)\.safetensors")
_KEEP = 2
_FIELDS = ("world_size", "steps", "consumed", "config", "layers", "layout", "statistics", "progress", "plan_left",
           "layout_pending")  # fmt: skip


@dataclass
class FitProgress:
    """Where a fit stands: ``steps`` taken (batches per rank), this rank's ``consumed`` batches, and the
    ``history`` of convergence checks (``{"step", "converged"}`` each: layers converged after that step)."""

    steps: int = 0
    consumed: int = 0
    history: list[dict[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often a fit writes checkpoints, and whether it resumes from one; ``Checkpointing()``
    neither writes nor resumes.

    Args:
        directory: the folder checkpoints are written to (None: no checkpoints are written).
        every: write a checkpoint every this many batches.
        resume_from: the folder to resume from (None: start afresh).
        required: resuming needs a checkpoint there (``resume_from=``); otherwise (``resume=True``) an
            empty folder starts a fresh fit.
    """

    directory: Path | None = None
    every: int = 50
    resume_from: Path | None = None
    required: bool = False

    @classmethod
    def from_arguments(
        cls,
        checkpoint_dir: str | os.PathLike[str] | None,
        checkpoint_every: int | None,
        resume: bool,
        resume_from: str | os.PathLike[str] | None,
    ) -> Checkpointing:
        """Validate ``fit``'s checkpoint arguments.

        Raises:
            InvalidConfigError: an argument is out of range or needs another one.
        """
        if not isinstance(resume, bool):
            raise InvalidConfigError(f"fit(resume={resume!r}) is invalid: expected True or False.")
        if checkpoint_every is not None and (
            not isinstance(checkpoint_every, int) or isinstance(checkpoint_every, bool) or checkpoint_every < 1
        ):
            raise InvalidConfigError(
                f"fit(checkpoint_every={checkpoint_every!r}) is invalid: expected an integer >= 1."
            )
        if checkpoint_every is not None and checkpoint_dir is None:
            raise InvalidConfigError(
                f"fit(checkpoint_every={checkpoint_every}) needs checkpoint_dir=..., the folder to write to."
            )
        if resume and checkpoint_dir is None and resume_from is None:
            raise InvalidConfigError(
                "fit(resume=True) needs checkpoint_dir=... (the folder earlier checkpoints were written to), or "
                "pass resume_from=<folder>."
            )
        if resume_from is not None and not Path(resume_from).is_dir():
            raise InvalidConfigError(
                f"fit(resume_from={str(resume_from)!r}): no such folder; pass the checkpoint_dir of the "
                "interrupted fit."
            )
        if checkpoint_dir is None and resume_from is None:
            return cls()
        source = Path(resume_from) if resume_from is not None else Path(checkpoint_dir) if resume else None  # type: ignore[arg-type]
        if checkpoint_dir is not None:
            _refuse_foreign_checkpoints(Path(checkpoint_dir), source)
        return cls(
            directory=None if checkpoint_dir is None else Path(checkpoint_dir),
            every=50 if checkpoint_every is None else checkpoint_every,
            resume_from=source,
            required=resume_from is not None,
        )

    # writing ---------------------------------------------------------------------------------------
    def due(self, steps: int) -> bool:
        """Whether a checkpoint is written after ``steps`` batches."""
        return self.directory is not None and steps % self.every == 0

    def start(self) -> None:
        """A fresh (not resumed) fit: make the folder (:meth:`from_arguments` made sure it holds no
        checkpoint of another fit; nothing is deleted)."""
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def save(
        self,
        progress: FitProgress,
        config: EvaConfig,
        layers: dict[str, nn.Module],
        recorder: InputRecorder,
        tracker: ConvergenceTracker,
        chooser: StatisticsChooser,
        group: ProcessGroup,
    ) -> Path:
        """Write this rank's running state after ``progress.steps`` batches, atomically."""
        assert self.directory is not None
        rank, world = group.rank, group.size
        tensors: dict[str, torch.Tensor] = {}
        statistics = {}
        for leader, stats in recorder.statistics.items():
            for key, value in stats.state_dict().items():
                tensors[f"stats/{leader}/{key}"] = value.detach().to("cpu").contiguous()
            device = getattr(stats, "local", stats)
            statistics[leader] = {
                "kind": type(stats).__name__,
                "dim": stats.dim,
                "device": str(_device_of(device)),
            }
        fields, progress_tensors = tracker.progress_state()
        tensors.update(
            {f"progress/{key}": value.detach().to("cpu").contiguous() for key, value in progress_tensors.items()}
        )
        meta = {
            "format": _FORMAT,
            "rank": rank,
            "world_size": world,
            "steps": progress.steps,
            "consumed": progress.consumed,
            "history": progress.history,
            "config": config_json(config),
            "layers": layer_signature(layers),
            "layout": recorder.layout(),
            "statistics": statistics,
            "progress": fields,
            "plan_left": chooser.left,
            "kinds": chooser.chosen,
            "layout_pending": group.layout_pending,
        }
        final = self.directory / f"eva-fit.rank{rank}-of{world}.step{progress.steps:08d}.safetensors"
        replace_atomically(
            final, lambda temporary: save_file(tensors, str(temporary), metadata={"eva": json.dumps(meta)})
        )
        for _, old in _listing(self.directory, rank, world)[:-_KEEP]:
            old.unlink(missing_ok=True)
        _log.debug("checkpoint %s written", final)
        return final

    # resuming --------------------------------------------------------------------------------------
    def resume(
        self,
        layers: dict[str, nn.Module],
        config: EvaConfig,
        recorder: InputRecorder,
        tracker: ConvergenceTracker,
        group: ProcessGroup,
        chooser: StatisticsChooser,
    ) -> tuple[FitProgress, int | None]:
        """Load the checkpoint to resume from into the recorder and tracker, or prepare the folder for a
        fresh fit. Returns the progress and the exact statistics' memory left (None: fresh fit)."""
        path = self.choose(group)
        if path is None:
            self.start()
            return FitProgress(), None

        def restore() -> tuple[FitProgress, int | None]:
            return self.restore(path, config, layers, recorder, tracker, group, chooser)

        return group.agree(restore, "while loading the checkpoint to resume from")

    def choose(self, group: ProcessGroup) -> Path | None:
        """The checkpoint this rank resumes from: the latest step every rank has and can read (an unreadable
        one, e.g. truncated, is skipped with a warning); None to start afresh.

        Raises:
            CheckpointMismatchError: ``resume_from`` holds no usable checkpoint, or only ones written by a
                different number of ranks.
            StateFileError: it holds checkpoints of this fit, but none that every rank can read.
        """
        if self.resume_from is None:
            return None
        world = group.size
        listed = dict(_listing(self.resume_from, group.rank, world))
        bad = {path.name: problem for path in listed.values() if (problem := _unreadable(path))}
        mine = {step: path for step, path in listed.items() if path.name not in bad}
        gathered = group.gather((sorted(mine), sorted(bad.items())))
        everyone = [set(steps) for steps, _ in gathered]
        unreadable = sorted({item for _, items in gathered for item in items})
        common = set.intersection(*everyone)
        if common and unreadable:
            skipped = "; ".join(f"{name}: {problem}" for name, problem in unreadable)
            warn(f"resume: skipping unreadable checkpoint(s) in {self.resume_from} ({skipped}); resuming from the "
                 f"older step {max(common)} kept beside it.", EvaWarning)  # fmt: skip
        if common:
            return mine[max(common)]
        if unreadable:
            raise StateFileError(
                f"resume: no checkpoint in {self.resume_from} that every rank can read: "
                f"{'; '.join(f'{name}: {problem}' for name, problem in unreadable)}; remove them and start "
                "afresh, or pass another folder."
            )
        others = sorted({path.name for path in self.resume_from.glob("eva-fit.rank*.safetensors")})
        if others and not any(everyone):
            raise CheckpointMismatchError(
                f"{self.resume_from} holds checkpoints of a fit with a different number of processes ({others[:3]}) "
                f"but this fit runs on {world}; resume with the same number of processes."
            )
        if self.required or any(everyone):
            raise CheckpointMismatchError(
                f"resume: {self.resume_from} holds no checkpoint that all {world} rank(s) wrote "
                f"(this rank has steps {sorted(mine)}); pass the checkpoint_dir of the interrupted fit."
            )
        _log.info("resume: no checkpoint in %s yet; starting afresh", self.resume_from)
        return None

    def restore(
        self,
        path: Path,
        config: EvaConfig,
        layers: dict[str, nn.Module],
        recorder: InputRecorder,
        tracker: ConvergenceTracker,
        group: ProcessGroup,
        chooser: StatisticsChooser,
    ) -> tuple[FitProgress, int]:
        """Load ``path`` into the recorder (its statistics made by its own factory, of the kinds the
        checkpoint holds, whatever the budget or free memory is now, on the device its layer is on now,
        whatever device wrote the checkpoint) and tracker; returns the progress and the exact statistics'
        memory left.

        Raises:
            CheckpointMismatchError: the checkpoint's config, targeted layers, weights or world size differ.
            StateFileError: the file is corrupt.
        """
        meta, tensors = _read(path, config, layer_signature(layers), group.size)
        devices = {leader: _device_now(layers.get(leader)) for leader in meta["statistics"]}
        tensors = {key: value.to(devices.get(key.split("/")[1], value.device)) for key, value in tensors.items()}
        recorder.restore_layout(meta["layout"])
        recorder.statistics.clear()
        chooser.reuse = _kinds(meta)
        for leader, info in meta["statistics"].items():
            stats = recorder.make_statistics(leader, int(info["dim"]), devices[leader])
            if type(stats).__name__ != info["kind"]:
                raise CheckpointMismatchError(
                    f"{path}: layer {leader!r} was measured with {info['kind']} but would now use "
                    f"{type(stats).__name__}; resume with the same eva-core version and number of processes."
                )
            prefix = f"stats/{leader}/"
            stats.load_state_dict(
                {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
            )
            recorder.statistics[leader] = stats
        progress = {key[len("progress/") :]: value for key, value in tensors.items() if key.startswith("progress/")}
        tracker.restore_progress(meta["progress"], progress)
        group.resume(bool(meta["layout_pending"]), recorder)
        _log.info("resuming from %s after %d batches", path, meta["steps"])
        history = [{"step": int(h["step"]), "converged": int(h["converged"])} for h in meta.get("history", [])]
        restored = FitProgress(steps=int(meta["steps"]), consumed=int(meta["consumed"]), history=history)
        return restored, int(meta["plan_left"])


def _read(
    path: Path, config: EvaConfig, signature: dict[str, list[Any]], world: int
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The checkpoint's metadata (checked against this fit) and its tensors, on the CPU.

    Raises:
        CheckpointMismatchError: written by another fit (config, model, weights, world size).
        StateFileError: corrupt or truncated, naming the file.
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("eva", "{}"))
            if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
                raise CheckpointMismatchError(f"{path} is not an EVA fit checkpoint ({_FORMAT}); pass another folder.")
            missing = [key for key in _FIELDS if key not in meta]
            if missing:
                raise KeyError(f"no {missing} in its metadata")
            check_same(path, meta, config, signature, world)
            return meta, {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as error:
        if isinstance(error, CheckpointMismatchError):
            raise
        raise StateFileError(
            f"{path} is corrupt or truncated ({type(error).__name__}: {error}); remove it to resume from the "
            "older checkpoint kept beside it, or start afresh in another checkpoint_dir."
        ) from error


_LEGACY_KINDS: dict[str, Kind] = {
    "GramStatistics": "exact",
    "SharedStatistics": "exact",
    "SketchStatistics": "sketch",
    "CountStatistics": "counts",
    "SharedCounts": "counts",
}  # the statistics classes of checkpoints written before they recorded their kinds ("kinds")


def _kinds(meta: dict[str, Any]) -> dict[str, Kind]:
    """The statistics kind of every measured input of a checkpoint, which a resumed fit keeps."""
    if "kinds" in meta:
        return dict(meta["kinds"])
    return {leader: _LEGACY_KINDS[info["kind"]] for leader, info in meta["statistics"].items()}


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from (truncated, corrupt header, not ours), or None: a cheap check,
    the header only (safetensors checks that the file covers every tensor it lists)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("eva", "{}"))
    except (SafetensorError, OSError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        return f"not an EVA fit checkpoint ({_FORMAT})"
    return None


def _device_now(module: nn.Module | None) -> torch.device:
    """The device a layer's inputs are measured on now: its parameters' (CPU for a layer without any)."""
    parameter = None if module is None else next(module.parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device


def _refuse_foreign_checkpoints(directory: Path, source: Path | None) -> None:
    """A fit writes into ``directory`` only if it holds no checkpoint, or the ones this fit resumes from
    (a fresh fit used to delete them all before writing its own).

    Raises:
        InvalidConfigError: ``directory`` holds checkpoints this fit does not resume from.
    """
    found = sorted(path.name for path in directory.glob("eva-fit.rank*.safetensors") if _NAME.fullmatch(path.name))
    if not found or (source is not None and source.resolve() == directory.resolve()):
        return
    raise InvalidConfigError(
        f"fit(checkpoint_dir={str(directory)!r}) already holds {len(found)} checkpoint(s) of an earlier fit "
        f"({', '.join(found[:3])}); they are left as they are. Pass resume=True to continue that fit, choose "
        "another checkpoint_dir, or remove them yourself."
    )


def _listing(directory: Path, rank: int, world: int) -> list[tuple[int, Path]]:
    """This rank's checkpoints in ``directory`` as (step, path), oldest first."""
    found = []
    for path in directory.glob("eva-fit.rank*.safetensors"):
        match = _NAME.fullmatch(path.name)
        if match and int(match[1]) == rank and int(match[2]) == world:
            found.append((int(match[3]), path))
    return sorted(found)


def _device_of(stats: Any) -> torch.device:  # recorded for diagnostics; a resume uses _device_now
    for name in ("scatter", "basis", "mean", "counts"):
        tensor = getattr(stats, name, None)
        if isinstance(tensor, torch.Tensor):
            return tensor.device
    return torch.device("cpu")
