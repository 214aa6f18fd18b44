"""peft initializations that need more than a ``LoraConfig``: data (CorDA, LoRA-GA) or a schedule (AdaLoRA).

All three are peft's own; this module only feeds them what they ask for, the same way for every domain:

- CorDA (Yang et al., 2024), instruction-previewed mode: peft hooks the targeted layers, builds each
  layer's input covariance ``C`` from ``run_model``, factors ``W C`` and starts the adapter from its top
  singular directions (``W`` becomes the residual). peft's hook takes one example at a time (it squeezes
  the batch dimension), so the calibration batches are split into single examples.
- LoRA-GA (Wang et al., 2024): peft accumulates the gradient of the loss w.r.t. each targeted ``W`` over
  the calibration batches and starts ``A`` and ``B`` from its singular vectors (``W`` becomes the
  residual); the loss is the domain's training loss.
- AdaLoRA (Zhang et al., 2023): SVD-shaped adapters that start at ``init_r`` and are pruned during
  training to an average of ``target_r``; :func:`eva_bench.train` calls its ``update_and_allocate`` after
  every step. Here ``target_r`` is the comparison's rank and ``init_r = ceil(1.5 r)``; the budget starts
  shrinking after 10 % of the steps and is final for the last 20 %.

peft implements all three for ``nn.Linear`` and GPT-2's ``Conv1D`` only; :func:`eva_bench.initialize`
refuses a convolution among the targets by name before calling these.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from eva_core.errors import InvalidConfigError

from .training import LossFn

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

__all__ = ["DATA_METHODS", "adalora_model", "calibrated_model", "single_examples"]

DATA_METHODS: tuple[str, ...] = ("corda", "loraga")
"""peft initializations that read training data (and, for LoRA-GA, the loss) before training."""


def calibrated_model(
    model: nn.Module,
    method: str,
    config: LoraConfig,
    batches: Iterable[Any],
    loss_fn: LossFn,
    *,
    calibration_batches: int,
) -> PeftModel:
    """``model`` wrapped by peft's CorDA (``method="corda"``) or LoRA-GA (``"loraga"``).

    Args:
        config: the comparison's ``LoraConfig`` with ``r`` and ``target_modules`` set.
        batches: training batches; the first ``calibration_batches`` are read (the iterable is iterated
            afresh, as EVA does).
        loss_fn: ``(model, batch) -> scalar loss``: LoRA-GA back-propagates it, CorDA only runs the forward.

    Raises:
        InvalidConfigError: no batch.
    """
    from peft import get_peft_model

    try:
        from peft import LoraGAConfig
        from peft.tuners.lora.config import CordaConfig
    except ImportError as error:
        raise InvalidConfigError(
            f"method={method!r}: the installed peft has no CorDA/LoRA-GA ({error}); upgrade it: pip install -U peft"
        ) from error

    calibration = list(itertools.islice(iter(batches), calibration_batches))
    if not calibration:
        raise InvalidConfigError(f"method={method!r} reads training data: batches yielded no batch.")
    if method == "corda":
        from peft.tuners.lora.corda import preprocess_corda  # imports attrs, which peft does not declare

        config = dataclasses.replace(config, init_lora_weights="corda", corda_config=CordaConfig(corda_method="ipm"))

        def run_model() -> None:
            with torch.no_grad():
                for batch in calibration:
                    for example in single_examples(batch):
                        loss_fn(model, example)

        preprocess_corda(model, config, run_model=run_model)
    else:
        from peft.tuners.lora.loraga import preprocess_loraga

        config = dataclasses.replace(config, init_lora_weights="lora_ga", lora_ga_config=LoraGAConfig())  # type: ignore[arg-type]

        def train_step() -> None:
            with warnings.catch_warnings():  # peft counts backward calls with a hook torch warns about
                warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
                for batch in calibration:
                    loss_fn(model, batch).backward()

        preprocess_loraga(model, config, train_step=train_step)
    return get_peft_model(model, config)


def adalora_model(model: nn.Module, config: LoraConfig, *, steps: int | None) -> PeftModel:
    """``model`` wrapped in AdaLoRA adapters budgeted for ``steps`` training steps.

    ``config`` supplies the targets, the average rank (``r`` becomes ``target_r``) and what every method
    shares (alpha, dropout, ``modules_to_save``, ``fan_in_fan_out``, task type).

    Raises:
        InvalidConfigError: ``steps`` missing (AdaLoRA schedules its budget over the whole run).
    """
    from peft import AdaLoraConfig, get_peft_model

    if steps is None or steps < 2:
        raise InvalidConfigError(
            f"method='adalora' schedules its rank budget over training: pass steps=<the training steps> "
            f"(>= 2), got steps={steps!r}."
        )
    adalora = AdaLoraConfig(
        init_r=math.ceil(1.5 * config.r),
        target_r=config.r,
        tinit=steps // 10,
        tfinal=steps // 5,
        deltaT=max(1, steps // 20),
        total_step=steps,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        modules_to_save=config.modules_to_save,
        fan_in_fan_out=config.fan_in_fan_out,
        bias=config.bias,
        task_type=config.task_type,
    )
    return get_peft_model(model, adalora)


def single_examples(batch: Any) -> Iterator[Any]:
    """The examples of ``batch`` one at a time, each still a batch of one: a tensor (B, ...) yields
    (1, ...) slices; a mapping or a tuple/list yields the same container with every tensor whose leading
    dimension is B sliced (other values kept); anything else is yielded whole."""
    size = _batch_size(batch)
    if size is None:
        yield batch
        return
    for index in range(size):
        yield _slice(batch, index, size)


def _batch_size(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else None
    values: Iterable[Any] = ()
    if isinstance(batch, Mapping):
        values = batch.values()
    elif isinstance(batch, (tuple, list)):
        values = batch
    sizes = [value.shape[0] for value in values if isinstance(value, torch.Tensor) and value.dim()]
    return max(sizes) if sizes else None


def _slice(batch: Any, index: int, size: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[index : index + 1] if batch.dim() and batch.shape[0] == size else batch
    if isinstance(batch, Mapping):
        return type(batch)({key: _slice(value, index, size) for key, value in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, (tuple, list)):
        return type(batch)(_slice(value, index, size) for value in batch)
    return batch
