"""``eva-lora fit`` for Decision Transformers: the models it loads and the episodes it reads.

MODEL is a local Decision Transformer folder (``config.json`` with ``model_type`` ``decision_transformer``)
or the alias of one in the eva cache (``dt-halfcheetah``: ``<cache>/dt-halfcheetah/model`` with its
``pretrain.json``, built by ``python benchmarks/pretrain_rl.py``; :func:`load_pretrained`). DATA is

- a task alias (``walker2d``, ``halfcheetah``) or its record ``<cache>/rl-datasets/<task>.json``: the record
  names the task's minari dataset, stored beside it (``settings.dataset_id``), and its return scale
  (``settings.return_scale``);
- a minari dataset: its folder, its ``data/`` folder or a file in it (``data/main_data.hdf5``).

States are normalized with the episodes' own mean and std, and batches are random windows of K timesteps
(:func:`eva_rl.trajectory_batches`): K is the one the model was pretrained with (``pretrain.json``, also
read next to a local ``model/`` folder), else 20. Options: ``context=20``, ``return_scale=100`` (minari data;
a task has its own), ``seed=0`` (the window draws). Reading minari datasets needs minari, an extra:
``pip install 'eva-rl[minari]'``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eva_core import LoadedModel, hookimpl
from eva_core.cli.domains import DomainOptions
from eva_core.errors import InvalidConfigError
from eva_core.paths import cache_dir

from .errors import MissingExtraError, MissingPretrainingError, TrajectoryError

if TYPE_CHECKING:
    from transformers import DecisionTransformerModel

    from .trajectories import Trajectory

__all__ = [
    "BUILD_COMMAND",
    "DATASETS_CACHE",
    "MODEL_ALIASES",
    "TASK_ALIASES",
    "TrajectoryInput",
    "eva_cli_batches",
    "eva_cli_load_model",
    "load_pretrained",
    "task_record_path",
]

MODEL_ALIASES: tuple[str, ...] = ("dt-halfcheetah",)
"""Decision Transformers ``python benchmarks/pretrain_rl.py`` builds in the eva cache."""

TASK_ALIASES: tuple[str, ...] = ("halfcheetah", "walker2d")
"""Tasks whose datasets ``python benchmarks/pretrain_rl.py`` records in ``<cache>/rl-datasets``."""

DATASETS_CACHE = "rl-datasets"
"""Subfolder of :func:`eva_core.paths.cache_dir` holding the task datasets (minari's ``MINARI_DATASETS_PATH``
while they are written) and, per task, ``<task>.json``: the settings they were built with."""

BUILD_COMMAND = "python benchmarks/pretrain_rl.py"
"""What builds the cached models and datasets: a script of the EVA source repository, not installed with
eva-rl (the messages that name it say so)."""

_MINARI_EXTRA = "pip install 'eva-rl[minari]'"
_DEFAULT_CONTEXT = 20
_DEFAULT_RETURN_SCALE = 100.0
_MAX_INT = 2**63 - 1  # --option context and seed: what torch can hold


@dataclass(frozen=True)
class TrajectoryInput:
    """What a loaded Decision Transformer takes: windows of ``context`` (K) timesteps."""

    context: int


@hookimpl
def eva_cli_load_model(model: str, data: str, options: Mapping[str, str]) -> LoadedModel | None:
    """An alias of :data:`MODEL_ALIASES` or a local folder of a Decision Transformer; None otherwise.

    Raises:
        MissingPretrainingError: the alias is not built yet (run ``python benchmarks/pretrain_rl.py``).
    """
    folder = Path(model).expanduser()
    if model in MODEL_ALIASES and not folder.exists():
        loaded, record = load_pretrained(model)
    elif _is_dt_folder(folder):
        from transformers import DecisionTransformerModel

        loaded = DecisionTransformerModel.from_pretrained(folder).eval()
        saved = folder.parent / "pretrain.json"  # the cache layout: <alias>/model + <alias>/pretrain.json
        record = json.loads(saved.read_text()) if saved.is_file() else {}
    else:
        return None
    context = DomainOptions.integer(
        options, "context", int(record.get("settings", {}).get("context", _DEFAULT_CONTEXT)), maximum=_MAX_INT
    )
    return LoadedModel(model=loaded, processor=TrajectoryInput(context))


@hookimpl
def eva_cli_batches(
    data: str, loaded: LoadedModel, batch_size: int, rows: int | None, options: Mapping[str, str]
) -> Iterable[Any] | None:
    """Batches of ``batch_size`` windows (dicts of ``states`` (B, K, d_s), ``actions``, ``returns_to_go``,
    ``timesteps``, ``attention_mask``...), ``ceil(rows / batch_size)`` of them; None for other data.

    Raises:
        TrajectoryError: the episodes do not fit the model (state/action sizes, episode length).
        MissingPretrainingError: a task's dataset is not in the cache.
        MissingExtraError: minari is not installed.
    """
    from .batches import trajectory_batches
    from .trajectories import StateStats

    if not isinstance(loaded.processor, TrajectoryInput):
        return None
    record = _task_record(data)
    if record is not None:
        folder, scale = _task_dataset(record)
    else:
        found = _minari_data_folder(Path(data).expanduser())
        if found is None:
            return None
        folder, scale = found, _float_option(options, "return_scale", _DEFAULT_RETURN_SCALE)
    seed = DomainOptions.integer(options, "seed", 0, minimum=0, maximum=_MAX_INT)
    context = DomainOptions.integer(options, "context", loaded.processor.context, maximum=_MAX_INT)
    episodes = _read_minari(folder)
    _check_fits(loaded, episodes, data)
    steps = sum(len(e) for e in episodes)
    count = -(-(rows if rows is not None else steps) // batch_size)
    return trajectory_batches(
        episodes, context=context, batch_size=batch_size, batches=count, seed=seed, return_scale=scale,
        stats=StateStats.of(episodes),
    )  # fmt: skip


def load_pretrained(alias: str = "dt-halfcheetah") -> tuple[DecisionTransformerModel, dict[str, Any]]:
    """The cached pretrained Decision Transformer of ``alias`` (eval mode) and its ``pretrain.json`` record
    (``settings``: ``context``...; ``summary``: its scores).

    Raises:
        MissingPretrainingError: nothing cached for ``alias``.
    """
    from transformers import DecisionTransformerModel

    folder = cache_dir(alias)
    if not (folder / "pretrain.json").is_file() or not (folder / "model").is_dir():
        raise MissingPretrainingError(
            f"no pretrained model {alias!r} in {folder}; pass your own DecisionTransformerModel folder as MODEL, "
            f"or build this one with `{BUILD_COMMAND}` from a checkout of the EVA source repository (the script "
            "is not installed with eva-rl; set EVA_CACHE_DIR to use another cache)."
        )
    model = DecisionTransformerModel.from_pretrained(folder / "model")
    return model.eval(), json.loads((folder / "pretrain.json").read_text())


def task_record_path(task: str) -> Path:
    """``<cache>/rl-datasets/<task>.json``: the record of a task's cached dataset."""
    return cache_dir(DATASETS_CACHE) / f"{task}.json"


def _is_dt_folder(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "decision_transformer"
    except (OSError, ValueError):
        return False


def _task_record(data: str) -> Path | None:
    """The task record ``data`` names: a task alias, or a ``<task>.json`` in an ``rl-datasets`` folder."""
    if data in TASK_ALIASES and not Path(data).exists():
        return task_record_path(data)
    path = Path(data).expanduser()
    if path.suffix == ".json" and path.parent.name == DATASETS_CACHE and (path.is_file() or path.stem in TASK_ALIASES):
        return path
    return None


def _task_dataset(record: Path) -> tuple[Path, float]:
    """The minari ``data/`` folder a task record names, stored beside it, and the task's return scale.

    Raises:
        MissingPretrainingError: the record or its dataset is missing.
    """
    missing = MissingPretrainingError(
        f"the {record.stem!r} dataset is not in the cache ({record} or its minari dataset is missing); build it "
        f"with `{BUILD_COMMAND}` from a checkout of the EVA source repository (not installed with eva-rl; set "
        "EVA_CACHE_DIR to use another cache), or pass a minari dataset as DATA."
    )
    if not record.is_file():
        raise missing
    settings = json.loads(record.read_text()).get("settings", {})
    if "dataset_id" not in settings or "return_scale" not in settings:
        raise InvalidConfigError(
            f"DATA={str(record)!r} is not a task record (its settings name no dataset_id and return_scale); "
            f"rebuild the cache with `{BUILD_COMMAND}`."
        )
    folder = record.parent / settings["dataset_id"] / "data"  # minari's layout: <root>/<namespace>/<name-vN>/data
    if not (folder / "metadata.json").is_file():
        raise missing
    return folder, float(settings["return_scale"])


def _minari_data_folder(path: Path) -> Path | None:
    """The ``data/`` folder of the minari dataset ``path`` is, or is in (it holds ``metadata.json``)."""
    for candidate in (path / "data", path, path.parent):
        if candidate.name == "data" and (candidate / "metadata.json").is_file():
            return candidate
    return None


def _read_minari(folder: Path) -> list[Trajectory]:
    """The episodes of the minari dataset whose ``data/`` folder is ``folder``.

    Raises:
        MissingExtraError: minari is not installed.
    """
    from .trajectories import trajectories

    try:
        import minari
    except ImportError as error:
        raise MissingExtraError(
            f"reading the minari dataset {folder.parent} needs minari, which is not installed; run `{_MINARI_EXTRA}`."
        ) from error
    return trajectories(minari.MinariDataset(str(folder)))


def _check_fits(loaded: LoadedModel, episodes: list[Trajectory], data: str) -> None:
    config: Any = loaded.model.config
    state_dim, act_dim = episodes[0].states.shape[1], episodes[0].actions.shape[1]
    if (state_dim, act_dim) != (config.state_dim, config.act_dim):
        raise TrajectoryError(
            f"DATA={data!r} has states of {state_dim} and actions of {act_dim} features, the model takes "
            f"{config.state_dim} and {config.act_dim}; pass a dataset of the model's environment."
        )
    longest = max(len(e) for e in episodes)
    if longest > config.max_ep_len:
        raise TrajectoryError(
            f"DATA={data!r} has an episode of {longest} steps, beyond the model's max_ep_len={config.max_ep_len} "
            "(its timestep embedding); pass shorter episodes or a model with a larger max_ep_len."
        )


def _float_option(options: Mapping[str, str], key: str, default: float) -> float:
    value = options.get(key)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not (number > 0 and math.isfinite(number)):
        raise InvalidConfigError(
            f"--option {key}={value!r} is invalid; use a finite number > 0, e.g. {key}={default:g}"
        )
    return number
