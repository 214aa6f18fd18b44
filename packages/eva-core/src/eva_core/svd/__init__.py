"""Streaming statistics of layer inputs and the solvers that read their top components."""

from __future__ import annotations

from .counts import CountStatistics
from .eigensolver import top_eigenpairs
from .gram import GramStatistics
from .sketch import SketchStatistics
from .spectrum import InputStatistics, Spectrum

__all__ = ["CountStatistics", "GramStatistics", "InputStatistics", "SketchStatistics", "Spectrum", "top_eigenpairs"]
