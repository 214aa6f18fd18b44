"""Capturing the inputs of targeted layers during forward passes."""

from __future__ import annotations

from .recorder import InputRecorder, StopForward
from .rows import embedding_rows, embedding_rows_for, input_width, token_rows

__all__ = ["InputRecorder", "StopForward", "embedding_rows", "embedding_rows_for", "input_width", "token_rows"]
