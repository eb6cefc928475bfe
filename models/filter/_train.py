"""Training: weighted logistic regression on hashed n-grams, Platt-calibrated, threshold for recall.

Examples are first collapsed to distinct (template, label) pairs with summed weights. For a
weighted logistic loss this is exact (identical feature rows with the same label contribute the
same gradient), and logs repeat a few templates, so a million examples train like a few thousand.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, ValidationError
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from sluice.models.filter._features import FeatureSpec, template_features
from sluice.models.filter._model import (
    FilterModel,
    ModelMetadata,
    ValidationMetrics,
    build_onnx,
    content_version,
)
from sluice.models.filter._normalize import normalize_batch
from sluice.models.filter._types import Source
from sluice.stream.errors import TrainingError

__all__ = [
    "Example",
    "TrainingError",
    "choose_threshold",
    "read_examples",
    "train",
    "validation_at",
    "weighted_metrics",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: bool
    weight: float = 1.0
    source: Source = "human"


class _Row(BaseModel):
    """One line of a file of labeled lines (JSON lines)."""

    model_config = ConfigDict(extra="ignore")

    text: str
    label: bool
    weight: float = 1.0
    source: Source = "dataset"


def read_examples(path: str | Path) -> list[Example]:
    """Labeled lines from JSON lines ({text, label, weight?, source?}); TrainingError names the
    line that is not one."""
    out: list[Example] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                r = _Row.model_validate_json(line)
            except ValidationError as exc:
                reason = exc.errors()[0]["msg"]
                raise TrainingError(f"{path}:{n}: not a labeled line: {reason}") from None
            out.append(Example(r.text, r.label, r.weight, r.source))
    return out


@dataclass
class _Table:
    """Distinct (template, label) rows with summed weights."""

    templates: list[str]
    labels: npt.NDArray[np.bool_]
    weights: npt.NDArray[np.float64]


def _collapse(templates: Iterable[str], labels: Iterable[bool], weights: Iterable[float]) -> _Table:
    acc: dict[tuple[str, bool], float] = defaultdict(float)
    for t, y, w in zip(templates, labels, weights, strict=True):
        acc[(t, y)] += w
    keys = list(acc)
    return _Table(
        [k[0] for k in keys],
        np.array([k[1] for k in keys], dtype=bool),
        np.array([acc[k] for k in keys], dtype=np.float64),
    )


def _matrix(templates: Sequence[str], spec: FeatureSpec) -> sparse.csr_matrix:
    rows = [template_features(t, spec) for t in templates]
    indptr = np.cumsum([0, *map(len, rows)])
    indices = np.fromiter((i for r in rows for i in r), dtype=np.int64, count=int(indptr[-1]))
    data = np.ones(len(indices), dtype=np.float32)
    return sparse.csr_matrix((data, indices, indptr), shape=(len(rows), spec.n_buckets + 1))


def _validation_rows(
    labels: npt.NDArray[np.bool_], val_fraction: float, seed: int
) -> npt.NDArray[np.bool_]:
    """Stratified split: the rarer class is split in the same proportion as the common one."""
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), dtype=bool)
    for cls in (True, False):
        idx = np.flatnonzero(labels == cls)
        n_val = round(len(idx) * val_fraction) if len(idx) >= 5 else 0
        is_val[rng.choice(idx, size=n_val, replace=False)] = True
    return is_val


def validation_at(
    model: FilterModel,
    examples: Sequence[Example],
    threshold: float,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> ValidationMetrics | None:
    """The figures of `model` at `threshold` on the validation split `train` held out of
    `examples` (the same split for the same examples and seed): a model whose threshold was
    moved after training (`with_threshold`) says what it does at the threshold it ships with."""
    labels = np.fromiter((e.label for e in examples), dtype=bool, count=len(examples))
    is_val = _validation_rows(labels, val_fraction, seed)
    if not is_val.any():
        return None
    rows = np.flatnonzero(is_val)
    templates = normalize_batch([examples[i].text for i in rows.tolist()])
    weights = np.fromiter((examples[i].weight for i in rows.tolist()), dtype=np.float64)
    va = _collapse(templates, labels[is_val], weights)
    scores = model.score_templates(va.templates).astype(np.float64)
    return weighted_metrics(scores, va.labels, va.weights, threshold)


def choose_threshold(
    scores: npt.NDArray[np.floating],
    labels: npt.NDArray[np.bool_],
    weights: npt.NDArray[np.floating],
    target_recall: float,
) -> float:
    """The highest threshold whose weighted recall (score >= t) is at least target_recall."""
    pos = labels.astype(bool)
    if not pos.any():
        raise TrainingError("no positive examples to set a recall threshold on")
    order = np.argsort(-scores[pos], kind="stable")
    s_pos, w_pos = scores[pos][order], weights[pos][order]
    cum = np.cumsum(w_pos)
    idx = int(np.searchsorted(cum, target_recall * cum[-1] * (1 - 1e-12)))
    return float(s_pos[min(idx, len(s_pos) - 1)])


def weighted_metrics(
    scores: npt.NDArray[np.floating],
    labels: npt.NDArray[np.bool_],
    weights: npt.NDArray[np.floating],
    threshold: float,
) -> ValidationMetrics:
    """Weighted precision, recall and forward ratio at `threshold` (no positives: recall 1)."""
    flagged = scores >= threshold
    tp = float(weights[flagged & labels].sum())
    fwd = float(weights[flagged].sum())
    pos = float(weights[labels].sum())
    total = float(weights.sum())
    return ValidationMetrics(
        precision=tp / fwd if fwd else 0.0,
        recall=tp / pos if pos else 1.0,
        forward_ratio=fwd / total if total else 0.0,
        positive_ratio=pos / total if total else 0.0,
        n=len(scores),
    )


def _platt(
    logits: npt.NDArray[np.float64], labels: npt.NDArray[np.bool_], weights: npt.NDArray[np.float64]
) -> tuple[float, float]:
    """Slope and intercept mapping raw logits to calibrated ones on held-out data."""
    if labels.all() or not labels.any():
        return 1.0, 0.0
    lr = LogisticRegression(C=1e4, solver="lbfgs", max_iter=1000)
    lr.fit(logits.reshape(-1, 1), labels, sample_weight=weights)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def train(
    examples: Sequence[Example],
    *,
    target_recall: float = 0.99,
    val_fraction: float = 0.2,
    seed: int = 0,
    spec: FeatureSpec | None = None,
    regularization: float = 4.0,
    created_at: datetime | None = None,
    parent_version: str | None = None,
    created_by: str | None = None,
) -> FilterModel:
    """Train, calibrate, pick the threshold for target_recall on validation, export to ONNX."""
    spec = spec or FeatureSpec()
    if not examples:
        raise TrainingError("no examples")
    t0 = time.perf_counter()
    templates = normalize_batch([e.text for e in examples])
    labels = np.fromiter((e.label for e in examples), dtype=bool, count=len(examples))
    weights = np.fromiter((e.weight for e in examples), dtype=np.float64, count=len(examples))
    if not labels.any() or labels.all():
        raise TrainingError("training needs both positive and negative examples")
    if (weights <= 0).any() or not np.isfinite(weights).all():
        raise TrainingError("example weights must be positive and finite")
    is_val = _validation_rows(labels, val_fraction, seed)
    tr = _collapse(
        (templates[i] for i in np.flatnonzero(~is_val)), labels[~is_val], weights[~is_val]
    )
    X = _matrix(tr.templates, spec)
    # Balance the classes for fitting (recall matters); Platt restores calibrated probabilities.
    w = tr.weights.copy()
    pos_w, neg_w = w[tr.labels].sum(), w[~tr.labels].sum()
    if pos_w == 0 or neg_w == 0:
        raise TrainingError("the training split lacks one class; add examples")
    w[tr.labels] *= 0.5 * w.sum() / pos_w
    w[~tr.labels] *= 0.5 * (pos_w + neg_w) / neg_w
    w *= len(w) / w.sum()
    clf = LogisticRegression(C=regularization, solver="lbfgs", max_iter=2000)
    clf.fit(X, tr.labels, sample_weight=w)
    coef = clf.coef_[0].astype(np.float64)
    coef[0] = 0.0  # padding id
    bias = float(clf.intercept_[0])

    validation: ValidationMetrics | None = None
    calibration: str = "none"
    if is_val.any():
        va = _collapse(
            (templates[i] for i in np.flatnonzero(is_val)), labels[is_val], weights[is_val]
        )
        z = _matrix(va.templates, spec) @ coef + bias
        a, c = _platt(z, va.labels, va.weights)
        coef, bias, calibration = coef * a, bias * a + c, "platt"
        p = 1.0 / (1.0 + np.exp(-(z * a + c)))
    else:  # tiny data: threshold on the training rows themselves
        va = tr
        p = 1.0 / (1.0 + np.exp(-(X @ coef + bias)))
    threshold = choose_threshold(p, va.labels, va.weights, target_recall)
    # ONNX computes in float32: keep the threshold at or below every score it was chosen from.
    threshold = float(np.nextafter(np.float32(threshold), np.float32(0)))
    validation = weighted_metrics(p, va.labels, va.weights, threshold) if is_val.any() else None
    weights32 = coef.astype(np.float32)
    meta = ModelMetadata(
        version=content_version(weights32, bias, threshold),
        created_at=created_at or datetime.now(UTC),
        threshold=threshold,
        target_recall=target_recall,
        n_train=len(examples),
        source_mix=dict(Counter(e.source for e in examples)),
        validation=validation,
        features=spec,
        calibration="platt" if calibration == "platt" else "none",
        parent_version=parent_version,
        created_by=created_by,
    )
    model = FilterModel(build_onnx(weights32, bias, meta), source=f"trained:{meta.version}")
    log.info(
        "trained filter %s on %d examples (%d distinct rows) in %.2fs",
        meta.version,
        len(examples),
        len(tr.templates),
        time.perf_counter() - t0,
    )
    return model
