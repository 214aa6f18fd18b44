"""The fit: batches streamed through a frozen model until its layers' input spectra converge.

:mod:`.loop` is ``fit`` and its loop; around it :mod:`.feed` (batches to the model), :mod:`.spectra`
(convergence while it runs, the :class:`~eva_core.EvaState` at its end), :mod:`.checkpoint` (resumable
fits), and :mod:`.process_group` with :mod:`.distributed` (one process or ``torch.distributed``, behind one
interface).
"""

from __future__ import annotations

from .loop import fit

__all__ = ["fit"]
