"""The small model: a fast, self-contained ONNX filter, its training, and a default that ships."""

from models.filter._features import FeatureSpec
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
    decode_line,
    normalize,
    normalize_batch,
)
from models.filter._runtime import Assessment, Filter, KeywordFilter, OnnxFilter, default_model
from models.filter._train import Example, TrainingError, choose_threshold, train

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
    "choose_threshold",
    "decode_line",
    "default_model",
    "normalize",
    "normalize_batch",
    "train",
]
