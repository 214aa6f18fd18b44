"""Sharing a fixed rank budget among layers."""

from __future__ import annotations

from .allocator import allocate_ranks
from .scores import component_scores

__all__ = ["allocate_ranks", "component_scores"]
