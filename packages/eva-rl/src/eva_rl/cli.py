"""``eva fit`` for Decision Transformers: the ``dt-halfcheetah`` alias or a local model folder, and the
episodes of a task's cached dataset or of a minari dataset.

``eva fit dt-halfcheetah ~/.cache/eva/rl-datasets/walker2d.json --domain rl`` loads the cached pretrained
model and cuts Decision Transformer batches (random K-step windows, :func:`eva_rl.trajectory_batches`)
from the task's episodes. DATA is

- a task's record ``<cache>/rl-datasets/<task>.json`` (what ``benchmarks/pretrain_rl.py`` writes), or
  the task alias itself (``walker2d``, ``halfcheetah``): the episodes, state statistics and return scale
  of :func:`eva_rl.load_task_data`;
- a minari dataset: its folder, its ``data/`` folder or a file in it (``data/main_data.hdf5``); states
  are normalized with the dataset's own mean and std.

K (the context) is the one the alias was pretrained with (``pretrain.json``, also read next to a local
``model/`` folder), else 20. Options: ``context=20``, ``return_scale=100`` (minari data; a task has its
own), ``seed=0`` (the window draws).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eva_core import InvalidConfigError, cache_dir, hookimpl
from eva_core.hookspecs import LoadedModel

from .errors import TrajectoryError
from .tasks import DATASETS_CACHE, TASKS

__all__ = ["TrajectoryInput", "eva_cli_batches", "eva_cli_load_model"]

_DEFAULT_CONTEXT = 20
_DEFAULT_RETURN_SCALE = 100.0


@dataclass(frozen=True)
class TrajectoryInput:
    """What a loaded Decision Transformer takes: windows of ``context`` (K) timesteps."""

    context: int


@hookimpl
def eva_cli_load_model(model: str, data: str, options: Mapping[str, str]) -> LoadedModel | None:
    """An alias of :data:`eva_rl.PRETRAINED` or a local folder of a Decision Transformer (``config.json``
    with ``model_type`` ``decision_transformer``); None otherwise.

    Raises:
        MissingPretrainingError: the alias is not built yet (run ``benchmarks/pretrain_rl.py``).
    """
    from transformers import DecisionTransformerModel

    from .api import default_lora_config
    from .pretrain import PRETRAINED, load_pretrained

    folder = Path(model).expanduser()
    if model in PRETRAINED and not folder.exists():
        loaded, record = load_pretrained(model)
    elif _is_dt_folder(folder):
        loaded = DecisionTransformerModel.from_pretrained(folder).eval()
        saved = folder.parent / "pretrain.json"  # the cache layout: <alias>/model + <alias>/pretrain.json
        record = json.loads(saved.read_text()) if saved.is_file() else {}
    else:
        return None
    context = _int_option(options, "context", int(record.get("settings", {}).get("context", _DEFAULT_CONTEXT)))
    return LoadedModel(
        model=loaded, processor=TrajectoryInput(context), lora_config=default_lora_config(loaded, rank=8)
    )


@hookimpl
def eva_cli_batches(
    data: str, loaded: LoadedModel, batch_size: int, rows: int | None, options: Mapping[str, str]
) -> Iterable[Any] | None:
    """Batches of ``batch_size`` windows (dicts of ``states`` (B, K, d_s), ``actions``, ``returns_to_go``,
    ``timesteps``, ``attention_mask``...), ``ceil(rows / batch_size)`` of them; None for other data.

    Raises:
        TrajectoryError: the episodes do not fit the model (state/action sizes, episode length).
    """
    from .trajectories import StateStats, trajectories, trajectory_batches

    if not isinstance(loaded.processor, TrajectoryInput):
        return None
    task = _task_of(data)
    minari_data = None if task is not None else _minari_data_folder(Path(data).expanduser())
    if task is None and minari_data is None:
        return None
    seed = _int_option(options, "seed", 0, minimum=0)
    context = _int_option(options, "context", loaded.processor.context)
    if task is not None:
        from .tasks import load_task_data

        task_data = load_task_data(task)
        episodes, stats, scale = list(task_data.episodes), task_data.stats, task_data.task.return_scale
    else:
        import minari

        episodes = trajectories(minari.MinariDataset(str(minari_data)))
        stats, scale = StateStats.of(episodes), _float_option(options, "return_scale", _DEFAULT_RETURN_SCALE)
    _check_fits(loaded, episodes, data)
    steps = sum(len(e) for e in episodes)
    count = -(-(rows if rows is not None else steps) // batch_size)
    return trajectory_batches(
        episodes, context=context, batch_size=batch_size, batches=count, seed=seed, return_scale=scale, stats=stats
    )


def _is_dt_folder(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "decision_transformer"
    except (OSError, ValueError):
        return False


def _task_of(data: str) -> str | None:
    """The task alias ``data`` names: the alias itself, or its record ``<cache>/rl-datasets/<task>.json``.

    Raises:
        InvalidConfigError: a task record outside the current cache (``load_task_data`` reads the cache).
    """
    if data in TASKS and not Path(data).exists():
        return data
    path = Path(data).expanduser()
    if path.suffix != ".json" or path.stem not in TASKS or path.parent.name != DATASETS_CACHE:
        return None
    expected = cache_dir(DATASETS_CACHE) / path.name
    if path.resolve() != expected.resolve():
        raise InvalidConfigError(
            f"DATA={data!r} is a task record outside the eva cache ({expected}); set EVA_CACHE_DIR to "
            f"{path.resolve().parent.parent} or pass the task alias {path.stem!r}."
        )
    return path.stem


def _minari_data_folder(path: Path) -> Path | None:
    """The ``data/`` folder of the minari dataset ``path`` is, or is in (it holds ``metadata.json``)."""
    for candidate in (path / "data", path, path.parent):
        if candidate.name == "data" and (candidate / "metadata.json").is_file():
            return candidate
    return None


def _check_fits(loaded: LoadedModel, episodes: list[Any], data: str) -> None:
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


def _int_option(options: Mapping[str, str], key: str, default: int, *, minimum: int = 1) -> int:
    value = options.get(key)
    if value is None:
        return default
    if not value.isdigit() or int(value) < minimum:
        raise InvalidConfigError(
            f"--option {key}={value!r} is invalid; use an integer >= {minimum}, e.g. {key}={default}"
        )
    return int(value)


def _float_option(options: Mapping[str, str], key: str, default: float) -> float:
    value = options.get(key)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise InvalidConfigError(f"--option {key}={value!r} is invalid; use a number > 0, e.g. {key}={default:g}")
    return number
