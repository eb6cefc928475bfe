"""Hashed bag-of-n-grams over a template's tokens: the feature spec that a model file records.

Words alone do not carry across systems: `NullPointerException`, `OutOfMemoryError` or
`segfault` are tokens no failure the model was trained on shares. With `subwords` = n, each word
of more than n letters also yields its character n-grams, marked at the word's ends (fastText's
subwords): `nullpointerexception` shares `xcep`, `tion>` with `exception`, `outofmemoryerror`
shares `rror>` with `error`.

With `severity` = 1, a word holding a stem of `SEVERITY_STEMS` (the failure vocabulary of syslog
severities and of runtimes, databases, kernels and orchestrators: `error`, `fatal`, `panic`,
`refused`, `killed`, ...) also yields that stem, and any such word one shared feature: what the
model learns of `error` on one system then carries to `panic` or `segfault` on another, which
leave-one-system-out validation measures (`train_default`). A spec without these (every model
trained before them) computes exactly what it always did.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from sluice.models.filter._normalize import MAX_LINE_CHARS, NORMALIZER_VERSION

__all__ = ["SEVERITY_STEMS", "FeatureSpec", "featurize", "template_features"]

_TOKEN = re.compile(r"<[a-z]+>|[^\W\d_]+")

#: Failure vocabulary, version 1: matched inside words (`nullpointerexception`, `oomkilled`).
SEVERITY_STEMS = (
    "emerg", "alert", "crit", "error", "err", "fatal", "panic", "severe", "fail", "exception",
    "abort", "crash", "killed", "kill", "denied", "refused", "timeout", "timed", "unreachable",
    "unavailable", "corrupt", "deadlock", "segfault", "segmentation", "oom", "overflow", "invalid",
    "illegal", "cannot", "unable", "broken", "stuck", "unhealthy", "notready", "backoff",
    "expired", "violation", "traceback", "rejected", "lost", "bug", "full", "down",
)  # fmt: skip


class FeatureSpec(BaseModel):
    """Everything besides the weights that scoring needs; stored in the model's metadata."""

    model_config = ConfigDict(frozen=True)

    n_buckets: int = 2**18
    ngrams: int = 2
    max_features: int = 256
    subwords: int = 0  # character n-gram length within words; 0: words only
    severity: int = 0  # failure-vocabulary features (SEVERITY_STEMS' version); 0: none
    hash: str = "crc32"
    normalizer_version: int = NORMALIZER_VERSION
    max_line_chars: int = MAX_LINE_CHARS


def template_features(template: str, spec: FeatureSpec) -> list[int]:
    """Sorted distinct bucket ids (1-based; 0 is padding) of a template's uni- and bigrams."""
    toks = _TOKEN.findall(template)
    grams = list(toks)
    if spec.ngrams >= 2:
        grams += [f"{a} {b}" for a, b in itertools.pairwise(toks)]
    k = spec.subwords
    if k:
        for w in set(toks):
            if len(w) > k and w[0] != "<":  # placeholders are whole words already
                m = f"<{w}>"
                grams += ["#" + m[i : i + k] for i in range(len(m) - k + 1)]
    if spec.severity:
        stems = {s for w in set(toks) for s in SEVERITY_STEMS if s in w}
        if stems:
            grams += ["§severity", *("§" + s for s in stems)]
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
