"""The Filter seam: the ONNX implementation with thread-safe hot swap, and a test double."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from sluice.models.filter._model import FilterModel

__all__ = ["Assessment", "Filter", "KeywordFilter", "OnnxFilter", "default_model"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Assessment:
    """Scores and decisions for one batch, all from the same model version."""

    scores: npt.NDArray[np.float32]
    flagged: npt.NDArray[np.bool_]
    model_version: str
    threshold: float
    #: each line's template (line shape), when the filter works them out to score (None: not)
    templates: Sequence[str] | None = None


@runtime_checkable
class Filter(Protocol):
    """Decides, per event, whether the large model should see it."""

    @property
    def version(self) -> str: ...

    def assess(self, lines: Sequence[str]) -> Assessment: ...


def default_model() -> FilterModel:
    """The model that ships in the package (trained by models.training.train_default)."""
    ref = resources.files("sluice.models.filter").joinpath("default.onnx")
    return FilterModel(ref.read_bytes(), source="models/filter/default.onnx")


class OnnxFilter:
    """Scores with ONNX Runtime; ``swap`` replaces the model while other threads keep scoring."""

    def __init__(self, model: FilterModel | None = None) -> None:
        self._model = model if model is not None else default_model()
        self._lock = threading.Lock()

    @classmethod
    def from_path(cls, path: str | Path) -> OnnxFilter:
        return cls(FilterModel.from_path(path))

    @property
    def model(self) -> FilterModel:
        return self._model

    @property
    def version(self) -> str:
        return self._model.version

    def assess(self, lines: Sequence[str]) -> Assessment:
        model = self._model  # one snapshot: scores, threshold and version always agree
        scores, templates = model.score_with_templates(lines)
        return Assessment(
            scores, scores >= model.threshold, model.version, model.threshold, templates
        )

    def score(self, lines: Sequence[str]) -> npt.NDArray[np.float32]:
        return self._model.score(lines)

    def flag(self, lines: Sequence[str]) -> npt.NDArray[np.bool_]:
        return self.assess(lines).flagged

    def swap(self, model: FilterModel) -> FilterModel:
        """Install a loaded model; returns the one it replaced."""
        with self._lock:
            old, self._model = self._model, model
        log.info("filter model swapped: %s -> %s", old.version, model.version)
        return old

    def swap_bytes(self, data: bytes, source: str) -> FilterModel:
        """Load and install; on a bad model raises FilterModelError and keeps the current one."""
        return self.swap(FilterModel(data, source=source))


class KeywordFilter:
    """Test double: flags lines containing any keyword (case-insensitive); score 1.0 or 0.0."""

    def __init__(self, keywords: Sequence[str] = ("error", "exception", "fail", "timeout")) -> None:
        self._keywords = tuple(k.lower() for k in keywords)

    @property
    def version(self) -> str:
        return "keyword:" + ",".join(self._keywords)

    def assess(self, lines: Sequence[str]) -> Assessment:
        hits = np.fromiter(
            (any(k in line.lower() for k in self._keywords) for line in lines),
            dtype=bool,
            count=len(lines),
        )
        return Assessment(hits.astype(np.float32), hits, self.version, 0.5)
