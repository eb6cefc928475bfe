"""Small shared types of the filter package (importable without ONNX or scikit-learn)."""

from __future__ import annotations

from typing import Literal

__all__ = ["Source"]

#: Where a training label came from.
Source = Literal["llm", "human", "audit", "dataset", "heuristic"]
