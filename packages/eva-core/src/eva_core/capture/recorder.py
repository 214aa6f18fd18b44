"""Forward pre-hooks that stream each targeted layer's input rows into its statistics.

On the first batch the recorder *discovers* the model: the order in which layers run, which layers
receive the very same input tensor object (q/k/v projections, gate/up), and whether any layer runs
more than once per forward. Identity is checked with ``is`` through weak references, so no activation
is hashed, copied or kept alive longer than the model keeps it (a freed tensor whose id is reused
simply fails the check). Layers sharing an input form a group measured once by its
first member (the *leader*). On later batches a follower only checks (by weak reference) that it still
gets its leader's tensor.

A sequence-first layer input (T, B, d_in) gets the batch's (B, T) row mask transposed. The layout is read
from shapes only when B != T, and remembered per layer. A batch with B == T and a mask that is not
symmetric, before any batch showed the layout, is left out of that layer's statistics rather than
guessed (logged): the next batch with B != T tells the layout.

Once a layer's statistics are no longer needed (it converged) its hook returns at once, and when the
last layer still being measured has captured its input the recorder raises :class:`StopForward` so the
rest of the network is skipped (after the last member of its group, so followers are still checked).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..contract import RowsFn
from ..errors import InconsistentSharedInputError
from ..svd import InputStatistics

__all__ = ["InputRecorder", "StopForward"]

_log = logging.getLogger(__name__)

StatisticsFactory = Callable[[str, int, torch.device], InputStatistics]


class StopForward(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised from a hook to end a forward pass once every active layer has captured its input."""


class InputRecorder:
    """Hooks the targeted layers of a model and feeds their inputs to per-group statistics.

    Args:
        layers: layer name -> module, in model order.
        rows_fns: layer name -> the function turning its input into rows.
        make_statistics: ``(leader name, d_in, device) -> statistics``, called on a leader's first input.
        share_inputs: group layers that receive the identical input tensor.
        stop_early: raise :class:`StopForward` after the last active layer.
    """

    def __init__(
        self,
        layers: dict[str, nn.Module],
        rows_fns: dict[str, RowsFn],
        make_statistics: StatisticsFactory,
        share_inputs: bool = True,
        stop_early: bool = True,
    ) -> None:
        self.layers = layers
        self.rows_fns = rows_fns
        self.make_statistics = make_statistics
        self.share_inputs = share_inputs
        self.stop_early = stop_early
        self.statistics: dict[str, InputStatistics] = {}
        self.leader_of: dict[str, str] = {}  # every layer that ran -> the layer measuring its input
        self.order: list[str] = []  # leaders in the order they first ran
        self.run_order: list[str] = []  # every layer in the order it first ran
        self.active: set[str] = set()  # leaders still being measured
        self.row_mask: torch.Tensor | None = None
        self.layouts: dict[str, str] = {}  # leader -> "batch-first" / "sequence-first", once a batch showed it
        self.layout_skipped: set[str] = set()  # leaders that skipped a square batch, their layout unknown then
        self._symmetric: bool | None = None  # whether this batch's square row mask equals its transpose
        self._discovering = True
        self._calls: dict[str, int] = {}
        self._devices: dict[str, torch.device] = {}  # leader -> where its statistics live
        self._held: dict[int, tuple[weakref.ref[torch.Tensor], str]] = {}  # first batch: id -> (input, leader)
        self._last_input: dict[str, weakref.ref[torch.Tensor]] = {}
        self._captured = 0
        self._stop_after: str | None = None
        self._handles: list[RemovableHandle] = []

    # lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> InputRecorder:
        for name, module in self.layers.items():
            self._handles.append(module.register_forward_pre_hook(self._hook_for(name), with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._held.clear()
        self._last_input.clear()

    def begin_batch(self, row_mask: torch.Tensor | None) -> None:
        """Set the (B, T) row mask of the batch about to run."""
        self.row_mask = row_mask
        self._symmetric = None
        self._captured = 0
        self._last_input.clear()

    def end_batch(self) -> None:
        """Close the batch; after the first one, discovery ends and groups are fixed."""
        if self._discovering:
            self._discovering = False
            self._held.clear()
            repeated = sorted(name for name, calls in self._calls.items() if calls > 1)
            if repeated and self.stop_early:
                _log.info("layers run more than once per forward (%s); forward passes run to the end", repeated[:3])
                self.stop_early = False
        self._refresh_stop()

    # which layers are measured ----------------------------------------------------------------------
    def members(self, leader: str) -> list[str]:
        """Every layer whose input ``leader`` measures (itself included), in model order."""
        return [name for name in self.layers if self.leader_of.get(name) == leader]

    def deactivate(self, leaders: Iterable[str]) -> None:
        self.active.difference_update(leaders)
        self._refresh_stop()

    def activate(self, leaders: Iterable[str]) -> None:
        self.active.update(leaders)
        self._refresh_stop()

    def _refresh_stop(self) -> None:
        if not self.stop_early or self._discovering or not self.active:
            self._stop_after = None
            return
        last_group = max(self.active, key=self.order.index)
        self._stop_after = max(self.members(last_group), key=self.run_order.index)

    # checkpoints and other processes --------------------------------------------------------------
    def layout(self) -> dict[str, Any]:
        """What the recorder learnt about the model (groups, run order, which leaders are measured), as
        JSON-ready data; :meth:`restore_layout` puts it back. Statistics are not included."""
        return {
            "leader_of": dict(self.leader_of),
            "order": list(self.order),
            "run_order": list(self.run_order),
            "active": [name for name in self.order if name in self.active],
            "discovering": self._discovering,
            "stop_early": self.stop_early,
            "calls": dict(self._calls),
            "layouts": dict(self.layouts),
        }

    def restore_layout(self, layout: dict[str, Any]) -> None:
        """Continue from a :meth:`layout` (a resumed fit): discovery is not repeated if it had ended."""
        self.leader_of = dict(layout["leader_of"])
        self.order = list(layout["order"])
        self.run_order = list(layout["run_order"])
        self.active = set(layout["active"])
        self._discovering = bool(layout["discovering"])
        self.stop_early = bool(layout["stop_early"])
        self._calls = {name: int(calls) for name, calls in layout["calls"].items()}
        self.layouts = dict(layout.get("layouts", {}))
        self._refresh_stop()

    def adopt(self, order: list[str], leader_of: dict[str, str]) -> list[str]:
        """Take over the groups another process discovered (a rank whose batches never reached a layer):
        ``order`` lists every leader in the agreed order, ``leader_of`` maps layers to leaders. Returns the
        leaders that are new here; they are measured from now on (their statistics are the caller's)."""
        new = [name for name in order if name not in self.order]
        for name, leader in leader_of.items():
            self.leader_of.setdefault(name, leader)
            if name not in self.run_order:
                self.run_order.append(name)
        self.order = list(order)
        self.active.update(new)
        self._refresh_stop()
        return new

    # the hook ---------------------------------------------------------------------------------------
    def _hook_for(self, name: str) -> Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            layer_input = args[0] if args else next(iter(kwargs.values()), None)
            if not isinstance(layer_input, torch.Tensor):
                return
            if self._discovering:
                self._discover(name, layer_input)
                return
            leader = self.leader_of.get(name)
            if leader is None:  # first ran after discovery (conditional computation): measure it alone
                self.run_order.append(name)
                self._add_leader(name)
                self.stop_early = False
                self._refresh_stop()
                leader = name
            if leader != name:
                self._check_shared(name, leader, layer_input)
            elif name in self.active:
                self._capture(name, layer_input)
            if self._stop_after == name and self._captured >= len(self.active):
                raise StopForward

        return hook

    def _discover(self, name: str, layer_input: torch.Tensor) -> None:
        self._calls[name] = self._calls.get(name, 0) + 1
        if self._calls[name] > 1:
            self._split(self.leader_of[name])  # its later inputs are its own: it cannot share a leader's rows
            self._capture(name, layer_input)
            return
        self.run_order.append(name)
        held = self._held.get(id(layer_input))
        if (
            self.share_inputs
            and held is not None
            and held[0]() is layer_input
            and self._calls[held[1]] == 1  # a leader that ran again holds rows its followers never saw
            and self._compatible(held[1], name)
        ):
            self.leader_of[name] = held[1]
            return
        self._add_leader(name)
        self._held[id(layer_input)] = (weakref.ref(layer_input), name)
        self._capture(name, layer_input)

    def _split(self, leader: str) -> None:
        """A member of ``leader``'s group runs a second time in the first forward: every follower becomes a
        leader of its own, starting from a copy of the group's statistics. That copy holds exactly the
        shared input's rows: until a member runs again (now) the leader captured only that input."""
        followers = [name for name in self.members(leader) if name != leader]
        stats = self.statistics.get(leader)
        position = self.order.index(leader)
        for offset, name in enumerate(followers, start=1):
            self.leader_of[name] = name
            self.order.insert(position + offset, name)
            self.active.add(name)
            if stats is not None:
                copy = self.make_statistics(name, stats.dim, self._devices[leader])
                copy.load_state_dict({key: value.clone() for key, value in stats.state_dict().items()})
                self.statistics[name] = copy
                self._devices[name] = self._devices[leader]

    def _add_leader(self, name: str) -> None:
        self.leader_of[name] = name
        self.order.append(name)
        self.active.add(name)

    def _compatible(self, leader: str, name: str) -> bool:
        return self.rows_fns[leader] is self.rows_fns[name]

    def _capture(self, name: str, layer_input: torch.Tensor) -> None:
        rows, mask = self.rows_fns[name](layer_input, self._mask_for(name, layer_input))  # (N, d_in), (N,)
        stats = self.statistics.get(name)
        if stats is None:
            stats = self.statistics[name] = self.make_statistics(name, rows.shape[-1], rows.device)
            self._devices[name] = rows.device
        stats.update(rows.detach(), mask)
        self._last_input[name] = weakref.ref(layer_input)
        self._captured += 1

    def _mask_for(self, name: str, layer_input: torch.Tensor) -> torch.Tensor | None:
        """The batch's (B, T) row mask laid out as ``layer_input`` is: transposed for a sequence-first
        (T, B, d_in) input. Shapes tell the layout apart only when B != T; a layer's layout is learnt from
        such a batch and kept. When B == T it is needed only if the mask is not symmetric; before the
        layout is known such a batch gets an all-false mask, i.e. adds no row to that layer (a batch-first
        default would measure a sequence-first layer's padding; refusing would fail a batch-first model
        whose first batch happens to be square).
        """
        mask = self.row_mask
        if mask is None or mask.dim() != 2 or layer_input.dim() != 3:
            return mask
        lead, (b, t) = tuple(layer_input.shape[:2]), tuple(mask.shape)
        if b != t:
            if lead in ((b, t), (t, b)):
                self.layouts[name] = "batch-first" if lead == (b, t) else "sequence-first"
            return mask.T if lead == (t, b) else mask
        if lead != (b, t):
            return mask
        known = self.layouts.get(name)
        if known is None:
            if self._symmetric is None:
                self._symmetric = bool(torch.equal(mask, mask.T))
            if not self._symmetric:
                _log.info(
                    "layer %r: batch size == sequence length (%d) and an asymmetric padding mask before any batch "
                    "showed whether its input is (B, T, d) or (T, B, d); this batch adds no row to it",
                    name,
                    b,
                )
                self.layout_skipped.add(name)
                return torch.zeros_like(mask, dtype=torch.bool)
        return mask.T if known == "sequence-first" else mask

    def _check_shared(self, name: str, leader: str, layer_input: torch.Tensor) -> None:
        ref = self._last_input.get(leader)
        if ref is None or leader not in self.active:
            return
        if ref() is not layer_input:
            raise InconsistentSharedInputError(
                f"layers {leader!r} and {name!r} received the same input tensor on the first batch but "
                "different ones later, so measuring them once would be wrong. Pass "
                "share_identical_inputs=False to measure every layer separately."
            )
