"""The validated configuration of an EVA fit."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import InvalidConfigError

__all__ = ["RedistributionMetric", "EvaConfig"]

RedistributionMetric = Literal["explained_variance_ratio", "explained_variance", "uniform"]
StatisticsKind = Literal["auto", "exact", "sketch"]
_METRICS: tuple[str, ...] = ("explained_variance_ratio", "explained_variance", "uniform")
_STATISTICS: tuple[str, ...] = ("auto", "exact", "sketch")
_DEFAULT_MIN_STEPS = 2
DEFAULT_TARGET_ERROR = 0.3
IGNORE_INDEX = -100
"""The label of tokens a loss skips (PyTorch's ``ignore_index``), and the default ``label_mask_value``."""


@dataclass(frozen=True)
class EvaConfig:
    """How to measure layer inputs and share out the rank budget.

    The budget is ``rank * L`` for ``L`` targeted layers; each layer may take at most
    ``round(rho * rank)`` components, so ``rho = 1`` means every layer keeps ``rank``.

    Args:
        rank: r, the average LoRA rank per targeted layer.
        rho: the largest rank a layer may receive, as a multiple of ``rank`` (>= 1).
        tau: the paper's (and peft's) stopping rule, the default: a layer has converged when each of its
            allocated components has absolute cosine similarity >= ``tau`` with the same component at the
            check before. ``None`` selects the subspace-error rule instead (see ``target_error``).
        target_error: read only with ``tau=None``: a layer stops being measured once its top components are
            estimated to lie within this subspace error of those unlimited data would give, ``1 - ||U* U^T||_F^2
            / k`` for its k allocated components U and the ideal ones U* (the mean squared sine of their
            principal angles: 0 = the same subspace, 1 = orthogonal; 0.3 is a root-mean-square angle of about
            33 degrees, 0.05 about 13). The rule stops a layer when 3 times its estimate is within the target,
            so that its actual error ends below it (``eva_core.fitting.stopping``; measured in
            ``docs/benchmarks.md``). Smaller values read more batches. Setting it away from its default while
            ``tau`` is a number is refused, since it would have no effect.
        target_modules: module names or a regex (as ``peft.LoraConfig`` takes them); ``None`` lets the
            domain plugin decide (the generic plugin targets every ``nn.Linear``).
        max_steps: the fit ends after this many batches even if some layer has not converged.
        min_steps: no layer is declared converged before this many batches (the default 2 is lowered to
            ``max_steps`` when that is smaller).
        check_every: test convergence every this many batches. Each test reads a few numbers back to
            the host, so on a GPU a larger value keeps whole stretches of batches free of synchronisation.
        centered: PCA of the inputs (subtract the running mean), as peft does; ``False`` takes the
            uncentered second moment.
        whiten: scale each LoRA ``A`` row by ``1 / std`` of its projection so ``A x`` has unit variance.
        redistribution: the score used to rank components across layers.
        seed: seeds the random start of the eigensolver; results do not depend on it beyond float noise.
        progress: show how far the fit is, on rank 0 only: a tqdm bar on a terminal and in a Jupyter or
            IPython kernel (the notebook widget when ipywidgets is installed, text otherwise); in a batch job
            (no terminal, no notebook) an INFO line on the ``eva_core.fitting.feed`` logger on the first
            batch and every 30 s (batches read, layers converged and still measuring, time elapsed).
            ``False`` shows neither. Every fit, whatever this says, ends with one INFO summary line on
            ``eva_core.fitting.loop`` (layers, batches, converged layers, rank budget used, seconds).
        share_identical_inputs: measure layers that receive the identical input tensor (q/k/v) once.
        stop_forward_early: end each forward pass right after the last layer still being measured.
        statistics: how each layer's inputs are measured (embeddings always by token counts). ``"auto"``:
            exact d_in x d_in statistics where they fit what is left of ``gram_memory_bytes`` and their update
            costs at most 4 times the streaming sketch's FLOPs per row (``eva_core.fitting.costs``: in practice
            inputs up to about 3000 wide at rank 16, rho 2), the sketch elsewhere; ``"exact"``: exact statistics
            wherever they fit the budget, whatever their cost; ``"sketch"``: the sketch for every layer.
            ``eva_core.plan`` shows the choice before a fit.
        gram_memory_bytes: the memory the exact d_in x d_in statistics may take together (8 * d_in^2 bytes
            each); layers that do not fit are measured with a streaming sketch instead. ``None``: a quarter of
            the free memory of the model's device when the fit starts (the smallest over the ranks of a
            distributed fit), leaving the rest to the forward's activations and the statistics' transients.
        domain: the plugin to use when several claim the model (e.g. ``"llm"``); ``None`` auto-detects.
        distributed: ``None`` merges the statistics of all ranks when ``torch.distributed`` is initialized
            with more than one process (each rank feeds its own shard of the batches); ``True`` requires
            that; ``False`` lets every rank fit alone on its own batches.
        use_label_mask: leave out of the SVD the tokens whose ``labels`` (a (B, T) tensor in a dict batch)
            equal ``label_mask_value`` (the prompt, the padding), as peft's ``EvaConfig.use_label_mask``;
            ``False`` measures them too (useful when masking would leave too few rows).
        label_mask_value: the label that marks a token to leave out (-100, PyTorch's ``ignore_index``).
        adjust_scaling_factors: as peft's ``EvaConfig.adjust_scaling_factors``: ``apply`` gives a layer whose
            rank differs from ``rank`` an alpha that keeps the LoRA scaling ``lora_alpha / r`` (``True``), or
            leaves every layer at ``lora_alpha`` so its scaling is ``lora_alpha / r_l`` (``False``).
    """

    rank: int = 16
    rho: float = 2.0
    tau: float | None = 0.99
    target_error: float = DEFAULT_TARGET_ERROR
    target_modules: Sequence[str] | str | None = None
    max_steps: int = 200
    min_steps: int = _DEFAULT_MIN_STEPS
    check_every: int = 1
    centered: bool = True
    whiten: bool = False
    redistribution: RedistributionMetric = "explained_variance_ratio"
    seed: int = 0
    progress: bool = True
    share_identical_inputs: bool = True
    stop_forward_early: bool = True
    statistics: StatisticsKind = "auto"
    gram_memory_bytes: int | None = None
    domain: str | None = None
    distributed: bool | None = None
    use_label_mask: bool = True
    label_mask_value: int = IGNORE_INDEX
    adjust_scaling_factors: bool = True

    def __post_init__(self) -> None:
        if self.min_steps == _DEFAULT_MIN_STEPS and _is_int(self.max_steps) and 1 <= self.max_steps < self.min_steps:
            object.__setattr__(self, "min_steps", self.max_steps)
        _require(_is_int(self.rank) and self.rank >= 1, "rank", self.rank, "an integer >= 1, e.g. rank=16")
        _require(
            _is_number(self.rho) and self.rho >= 1.0,
            "rho",
            self.rho,
            "a number >= 1 (1 keeps every layer at `rank`; 2 lets a layer take up to 2*rank)",
        )
        self._check_stopping()
        _require(_is_int(self.max_steps) and self.max_steps >= 1, "max_steps", self.max_steps, "an integer >= 1")
        _require(
            _is_int(self.min_steps) and 1 <= self.min_steps <= self.max_steps,
            "min_steps",
            self.min_steps,
            f"an integer in [1, max_steps={self.max_steps}]",
        )
        _require(
            _is_int(self.check_every) and self.check_every >= 1, "check_every", self.check_every, "an integer >= 1"
        )
        _require(
            self.redistribution in _METRICS,
            "redistribution",
            self.redistribution,
            f"one of {', '.join(repr(m) for m in _METRICS)}",
        )
        self._check_statistics()
        _require(
            _is_int(self.seed) and -(2**63) <= self.seed < 2**64, "seed", self.seed, "an integer in [-2**63, 2**64)"
        )
        self._check_targets()
        _require(
            self.domain is None or (isinstance(self.domain, str) and self.domain != ""),
            "domain",
            self.domain,
            "None (the plugin that claims the model) or the name of an installed eva domain, e.g. 'llm'",
        )
        _require(_is_int(self.label_mask_value), "label_mask_value", self.label_mask_value, "an integer, e.g. -100")
        _require(
            self.distributed is None or isinstance(self.distributed, bool),
            "distributed",
            self.distributed,
            "None (automatic), True or False",
        )
        flags = ("centered", "whiten", "progress", "share_identical_inputs", "stop_forward_early", "use_label_mask")
        for flag in flags:
            value = getattr(self, flag)
            _require(isinstance(value, bool), flag, value, "True or False")
        _require(
            isinstance(self.adjust_scaling_factors, bool),
            "adjust_scaling_factors",
            self.adjust_scaling_factors,
            "True or False",
        )

    def _check_statistics(self) -> None:
        """``statistics`` is one of the three kinds; ``gram_memory_bytes`` None or a size."""
        _require(
            self.statistics in _STATISTICS,
            "statistics",
            self.statistics,
            "'auto' (exact where it fits and is cheap enough), 'exact' (wherever it fits) or 'sketch' (everywhere)",
        )
        _require(
            self.gram_memory_bytes is None or (_is_int(self.gram_memory_bytes) and self.gram_memory_bytes >= 0),
            "gram_memory_bytes",
            self.gram_memory_bytes,
            "None (a quarter of the device's free memory) or an integer number of bytes >= 0 (0 measures every "
            "layer with the streaming sketch)",
        )

    def _check_stopping(self) -> None:
        """``tau`` is None or in [0, 1]; ``target_error`` in (0, 1)."""
        _require(
            self.tau is None or (_is_number(self.tau) and 0.0 <= self.tau <= 1.0),
            "tau",
            self.tau,
            "None (stop by the estimated subspace error, target_error) or a number in [0, 1], e.g. 0.99",
        )
        _require(
            _is_number(self.target_error) and 0.0 < self.target_error < 1.0,
            "target_error",
            self.target_error,
            "a number in (0, 1), e.g. 0.3 (smaller reads more batches)",
        )
        _require(
            self.tau is None or self.target_error == DEFAULT_TARGET_ERROR,
            "target_error",
            self.target_error,
            f"no target with tau={self.tau}: the cosine rule does not read it; pass tau=None as well to stop "
            "each layer by its estimated subspace error",
        )

    def _check_targets(self) -> None:
        """``target_modules`` is None, a valid regex, or a non-empty list of names (stored as a tuple)."""
        targets = self.target_modules
        if isinstance(targets, str):
            try:
                re.compile(targets)  # an invalid regex fails here, naming it, not deep inside the fit
            except re.error as error:
                _require(False, "target_modules", targets, f"a valid regular expression ({error}), or a list of names")
        elif targets is not None:
            ok = isinstance(targets, Sequence) and all(isinstance(t, str) for t in targets) and len(targets) > 0
            _require(ok, "target_modules", targets, "None, a regex string, or a non-empty list of module names")
            object.__setattr__(self, "target_modules", tuple(targets))

    @property
    def max_components(self) -> int:
        """The most components any one layer can be given: ``round(rho * rank)``."""
        return max(self.rank, round(self.rho * self.rank))

    @property
    def stopping(self) -> str:
        """The stopping rule in a few words: ``"subspace error <= 0.3"`` or ``"|cos| >= 0.99"`` (``tau`` set)."""
        return f"subspace error <= {self.target_error}" if self.tau is None else f"|cos| >= {self.tau}"

    def replace(self, **changes: object) -> EvaConfig:
        """A copy with ``changes`` applied and validated; unknown names raise ``InvalidConfigError``."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InvalidConfigError(f"EvaConfig has no field(s) {unknown}; valid fields are {sorted(known)}.")
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, field: str, value: object, expected: str) -> None:
    if not ok:
        raise InvalidConfigError(f"EvaConfig.{field}={value!r} is invalid: expected {expected}.")
