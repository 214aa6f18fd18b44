"""What a fit will hold and cost, per measured input and in total: the value :func:`eva_core.plan` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..fitting.costs import flops, size

if TYPE_CHECKING:
    from ..config import EvaConfig
    from ..fitting.costs import Kind

__all__ = ["InputPlan", "Plan"]


@dataclass(frozen=True)
class InputPlan:
    """One measured input: a leader layer and the layers that share its input tensor (q/k/v).

    Attributes:
        leader: the layer whose hook measures the input; ``members`` lists every layer it serves, itself first.
        d_in: the input's width (``num_embeddings`` for an embedding's one-hot rows).
        rows: N, rows per batch of the planned shape (masked rows included: an upper bound).
        kind: ``"exact"`` (d_in x d_in Gram), ``"sketch"`` or ``"counts"`` (an embedding's token counts).
        reason: why that kind, in a few words.
        max_components: k, the most components the input's layers may take (``round(rho * rank)``).
        sketch_width: l, the rows a sketch of this input keeps (whatever its kind).
        statistic_bytes: what its statistics hold between batches (at most, for a sketch).
        update_flops: FLOPs of folding one batch's ``rows`` in.
        solve_flops: FLOPs of reading its top components at one convergence check.
        transient_bytes: the largest temporary memory of one update or one solve.
        exchange_bytes: bytes each rank sends per convergence check in a fit on ``Plan.world_size`` ranks
            (0 on one): exact, the float64 scatter and sum it reduces onto the input's owner
            (8 d_in^2 + 8 d_in) plus the components broadcast back (4 k (d_in + 3)); sketch, its float32 rows
            (the sketch and the pending rows, at most 3 l) gathered by the owner (12 l d_in) plus the components
            broadcast back; counts, the
            float64 counts all-reduced (8 d_in).
    """

    leader: str
    members: tuple[str, ...]
    d_in: int
    rows: int
    kind: Kind
    reason: str
    max_components: int
    sketch_width: int
    statistic_bytes: int
    update_flops: float
    solve_flops: float
    transient_bytes: int
    exchange_bytes: int


@dataclass(frozen=True)
class Plan:
    """The predicted cost of fitting a model on batches of one shape (:func:`eva_core.plan`).

    Attributes:
        inputs: one :class:`InputPlan` per measured input, in the order the forward meets them.
        config: the settings the fit would use (the domain's defaults with the overrides applied).
        domain: the eva domain that would fit the model.
        budget: the bytes the exact statistics may take together (``gram_memory_bytes``, or its default).
        forward_flops: FLOPs of one forward pass on the planned batch (``torch.utils.flop_counter``).
        world_size: W, the ranks the exchange figures are for.
    """

    inputs: tuple[InputPlan, ...]
    config: EvaConfig
    domain: str
    budget: int
    forward_flops: float
    world_size: int = 1

    @property
    def layers(self) -> int:
        """The targeted layers (members of every measured input)."""
        return sum(len(item.members) for item in self.inputs)

    @property
    def statistic_bytes(self) -> int:
        """What the statistics of all measured inputs hold together."""
        return sum(item.statistic_bytes for item in self.inputs)

    @property
    def peak_bytes(self) -> int:
        """Predicted peak extra memory of the fit: the statistics plus the largest transient of one update
        or solve (the model's own activations are not counted)."""
        return self.statistic_bytes + max((item.transient_bytes for item in self.inputs), default=0)

    @property
    def update_flops(self) -> float:
        """FLOPs of folding one batch into every measured input's statistics."""
        return sum(item.update_flops for item in self.inputs)

    @property
    def overhead(self) -> float:
        """``update_flops / forward_flops``: the statistics' work per batch relative to the forward's."""
        return self.update_flops / self.forward_flops if self.forward_flops else float("inf")

    @property
    def exchange_bytes(self) -> int:
        """Bytes each rank sends per convergence check (0 on one rank)."""
        return sum(item.exchange_bytes for item in self.inputs)

    def kinds(self) -> dict[str, str]:
        """Each measured input's leader and its kind (``"exact"``, ``"sketch"``, ``"counts"``)."""
        return {item.leader: item.kind for item in self.inputs}

    def table(self) -> str:
        """The plan as a markdown table, one row per measured input, then the totals."""
        lines = [
            "| input | layers | d_in | rows/batch | kind | statistics | update per batch | solve per check "
            "| sent/check/rank | why |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---|",
        ]
        for item in self.inputs:
            lines.append(
                f"| {item.leader} | {len(item.members)} | {item.d_in} | {item.rows} | {item.kind} | "
                f"{size(item.statistic_bytes)} | {flops(item.update_flops)} | {flops(item.solve_flops)} | "
                f"{size(item.exchange_bytes)} | {item.reason} |"
            )
        kinds = {kind: sum(item.kind == kind for item in self.inputs) for kind in ("exact", "sketch", "counts")}
        lines += [
            "",
            f"{self.layers} layers in {len(self.inputs)} measured inputs ({kinds['exact']} exact, {kinds['sketch']} "
            f"sketch, {kinds['counts']} counts); domain {self.domain}, rank {self.config.rank}, rho {self.config.rho}, "
            f"statistics={self.config.statistics!r}, exact budget {size(self.budget)}",
            f"statistics: {size(self.statistic_bytes)}; predicted peak extra memory: {size(self.peak_bytes)}",
            f"per batch: forward {flops(self.forward_flops)}, statistics {flops(self.update_flops)} "
            f"(overhead {self.overhead:.3f} x the forward)",
        ]
        if self.world_size > 1:
            lines.append(f"per check on {self.world_size} ranks: {size(self.exchange_bytes)} sent by each rank")
        return "\n".join(lines)
