"""Planning a fit before any data is read: per measured input, what its statistics hold and cost."""

from __future__ import annotations

from .plan import InputPlan, Plan
from .planner import plan

__all__ = ["InputPlan", "Plan", "plan"]
