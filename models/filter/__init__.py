"""The small model: a fast, self-contained ONNX filter, its training, and a default that ships.

Names are loaded on first use (PEP 562), so importing the package is cheap: the CLI and the
settings do not pay for the heavy libraries (ONNX Runtime, scikit-learn, openai) until used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.models._lazy import lazy_names

if TYPE_CHECKING:
    from sluice.models.filter._features import (
        FeatureSpec,
        template_features,
    )
    from sluice.models.filter._model import (
        FilterError,
        FilterModel,
        FilterModelError,
        ModelMetadata,
        ValidationMetrics,
    )
    from sluice.models.filter._normalize import (
        MAX_LINE_CHARS,
        NORMALIZER_VERSION,
        cache_keys,
        decode_line,
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
    "FeatureSpec": "sluice.models.filter._features",
    "template_features": "sluice.models.filter._features",
    "FilterError": "sluice.models.filter._model",
    "FilterModel": "sluice.models.filter._model",
    "FilterModelError": "sluice.models.filter._model",
    "ModelMetadata": "sluice.models.filter._model",
    "ValidationMetrics": "sluice.models.filter._model",
    "MAX_LINE_CHARS": "sluice.models.filter._normalize",
    "NORMALIZER_VERSION": "sluice.models.filter._normalize",
    "decode_line": "sluice.models.filter._normalize",
    "normalize": "sluice.models.filter._normalize",
    "normalize_batch": "sluice.models.filter._normalize",
    "cache_keys": "sluice.models.filter._normalize",
    "template_of_key": "sluice.models.filter._normalize",
    "Assessment": "sluice.models.filter._runtime",
    "Filter": "sluice.models.filter._runtime",
    "KeywordFilter": "sluice.models.filter._runtime",
    "OnnxFilter": "sluice.models.filter._runtime",
    "default_model": "sluice.models.filter._runtime",
    "Example": "sluice.models.filter._train",
    "TrainingError": "sluice.models.filter._train",
    "choose_threshold": "sluice.models.filter._train",
    "train": "sluice.models.filter._train",
    "read_examples": "sluice.models.filter._train",
    "weighted_metrics": "sluice.models.filter._train",
}


__getattr__, __dir__ = lazy_names(globals(), _WHERE)
