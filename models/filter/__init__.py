"""The small model: a fast, self-contained ONNX filter, its training, and a default that ships.

Names are loaded on first use (PEP 562), so importing the package is cheap: the CLI and the
settings do not pay for the heavy libraries (ONNX Runtime, scikit-learn, openai) until used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from models._lazy import lazy_names

if TYPE_CHECKING:
    from models.filter._features import (
        FeatureSpec,
        template_features,
    )
    from models.filter._model import (
        FilterError,
        FilterModel,
        FilterModelError,
        ModelMetadata,
        ValidationMetrics,
    )
    from models.filter._normalize import (
        MAX_LINE_CHARS,
        NORMALIZER_VERSION,
        cache_keys,
        decode_line,
        normalize,
        normalize_batch,
        template_of_key,
    )
    from models.filter._runtime import (
        Assessment,
        Filter,
        KeywordFilter,
        OnnxFilter,
        default_model,
    )
    from models.filter._train import (
        Example,
        TrainingError,
        choose_threshold,
        read_examples,
        train,
        weighted_metrics,
    )

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
    "normalize",
    "normalize_batch",
    "read_examples",
    "template_features",
    "template_of_key",
    "train",
    "weighted_metrics",
]

_WHERE = {
    "FeatureSpec": "models.filter._features",
    "template_features": "models.filter._features",
    "FilterError": "models.filter._model",
    "FilterModel": "models.filter._model",
    "FilterModelError": "models.filter._model",
    "ModelMetadata": "models.filter._model",
    "ValidationMetrics": "models.filter._model",
    "MAX_LINE_CHARS": "models.filter._normalize",
    "NORMALIZER_VERSION": "models.filter._normalize",
    "decode_line": "models.filter._normalize",
    "normalize": "models.filter._normalize",
    "normalize_batch": "models.filter._normalize",
    "cache_keys": "models.filter._normalize",
    "template_of_key": "models.filter._normalize",
    "Assessment": "models.filter._runtime",
    "Filter": "models.filter._runtime",
    "KeywordFilter": "models.filter._runtime",
    "OnnxFilter": "models.filter._runtime",
    "default_model": "models.filter._runtime",
    "Example": "models.filter._train",
    "TrainingError": "models.filter._train",
    "choose_threshold": "models.filter._train",
    "train": "models.filter._train",
    "read_examples": "models.filter._train",
    "weighted_metrics": "models.filter._train",
}


__getattr__, __dir__ = lazy_names(globals(), _WHERE)
