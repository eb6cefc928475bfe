"""The small model: a fast, self-contained ONNX filter, its training, and a default that ships.

Names are loaded on first use (PEP 562), so importing the package is cheap: the CLI and the
settings do not pay for the heavy libraries (ONNX Runtime, scikit-learn, openai) until used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.stream._lazy import lazy_names

if TYPE_CHECKING:
    from sluice.models.filter._features import (
        FeatureSpec,
        template_features,
    )
    from sluice.models.filter._model import (
        FilterModel,
        ModelMetadata,
        ValidationMetrics,
    )
    from sluice.models.filter._normalize import (
        MAX_LINE_CHARS,
        NORMALIZER_VERSION,
        cache_keys,
        decode_line,
        mask_batch,
        normalize,
        normalize_batch,
        template_of_key,
    )
    from sluice.models.filter._runtime import (
        Assessment,
        Filter,
        KeywordFilter,
        OnnxFilter,
        default_model,
    )
    from sluice.models.filter._train import (
        Example,
        choose_threshold,
        read_examples,
        train,
        weighted_metrics,
    )
    from sluice.stream.errors import FilterError, FilterModelError, TrainingError

__all__ = [
    "MAX_LINE_CHARS",
    "NORMALIZER_VERSION",
    "Assessment",
    "Example",
    "FeatureSpec",
    "Filter",
    "FilterError",
    "FilterModel",
    "FilterModelError",
    "KeywordFilter",
    "ModelMetadata",
    "OnnxFilter",
    "TrainingError",
    "ValidationMetrics",
    "cache_keys",
    "choose_threshold",
    "decode_line",
    "default_model",
    "mask_batch",
    "normalize",
    "normalize_batch",
    "read_examples",
    "template_features",
    "template_of_key",
    "train",
    "weighted_metrics",
]

_WHERE = {
    "sluice.stream.errors": ["FilterError", "FilterModelError", "TrainingError"],
    "sluice.models.filter._features": ["FeatureSpec", "template_features"],
    "sluice.models.filter._model": ["FilterModel", "ModelMetadata", "ValidationMetrics"],
    "sluice.models.filter._normalize": [
        "MAX_LINE_CHARS",
        "NORMALIZER_VERSION",
        "decode_line",
        "normalize",
        "normalize_batch",
        "cache_keys",
        "mask_batch",
        "template_of_key",
    ],
    "sluice.models.filter._runtime": [
        "Assessment",
        "Filter",
        "KeywordFilter",
        "OnnxFilter",
        "default_model",
    ],
    "sluice.models.filter._train": [
        "Example",
        "choose_threshold",
        "train",
        "read_examples",
        "weighted_metrics",
    ],
}


__getattr__, __dir__ = lazy_names(globals(), _WHERE)
