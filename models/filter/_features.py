"""Hashed bag-of-n-grams over a template's tokens: the feature spec that a model file records."""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from sluice.models.filter._normalize import MAX_LINE_CHARS, NORMALIZER_VERSION

__all__ = ["FeatureSpec", "featurize", "template_features"]

_TOKEN = re.compile(r"<[a-z]+>|[^\W\d_]+")


class FeatureSpec(BaseModel):
    """Everything besides the weights that scoring needs; stored in the model's metadata."""

    model_config = ConfigDict(frozen=True)

    n_buckets: int = 2**18
    ngrams: int = 2
    max_features: int = 256
    hash: str = "crc32"
    normalizer_version: int = NORMALIZER_VERSION
    max_line_chars: int = MAX_LINE_CHARS


def template_features(template: str, spec: FeatureSpec) -> list[int]:
    """Sorted distinct bucket ids (1-based; 0 is padding) of a template's uni- and bigrams."""
    toks = _TOKEN.findall(template)
    grams = list(toks)
    if spec.ngrams >= 2:
        grams += [f"{a} {b}" for a, b in itertools.pairwise(toks)]
    n = spec.n_buckets
    ids = sorted({zlib.crc32(g.encode("utf-8", "replace")) % n + 1 for g in grams})
    return ids[: spec.max_features]


def featurize(templates: Sequence[str], spec: FeatureSpec) -> npt.NDArray[np.int64]:
    """A padded [N, L] id matrix for the ONNX graph (L ≥ 1)."""
    rows = [template_features(t, spec) for t in templates]
    width = max((len(r) for r in rows), default=0) or 1
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out
