"""A filter model: an ONNX graph (gather + sum + sigmoid over hashed n-gram ids) plus metadata."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from datetime import datetime
from itertools import repeat
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, ValidationError

from sluice.models.filter._features import FeatureSpec, featurize
from sluice.models.filter._normalize import NORMALIZER_VERSION, mask_batch, template_of_masked
from sluice.models.filter._types import Source
from sluice.stream.errors import FilterError, FilterModelError

__all__ = ["FilterError", "FilterModel", "FilterModelError", "ModelMetadata", "ValidationMetrics"]

_META_KEY = "sluice.filter"
_OPSET = 17
#: Entries per score cache before it is cleared (bounded memory: ~25 MB each at full size).
CACHE_MAX = 100_000


class ValidationMetrics(BaseModel):
    model_config = ConfigDict(frozen=True)

    precision: float
    recall: float
    forward_ratio: float
    positive_ratio: float
    n: int


class ModelMetadata(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str
    created_at: datetime
    threshold: float
    target_recall: float
    n_train: int
    source_mix: dict[Source, int]
    validation: ValidationMetrics | None
    features: FeatureSpec
    calibration: Literal["platt", "none"]
    parent_version: str | None = None
    created_by: str | None = None


def build_onnx(weights: npt.NDArray[np.float32], bias: float, meta: ModelMetadata) -> bytes:
    """Serialize weights (index 0 = padding, weight 0) and metadata into one self-contained file."""
    import onnx  # here, not at the top: 0.9 s of imports (ml_dtypes) every scoring command and
    from onnx import TensorProto, helper, numpy_helper  # worker start paid, measured

    w = numpy_helper.from_array(weights.astype(np.float32), "weights")
    b = numpy_helper.from_array(np.array(bias, dtype=np.float32), "bias")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Gather", ["weights", "ids"], ["gathered"], axis=0),
        helper.make_node("ReduceSum", ["gathered", "axes"], ["summed"], keepdims=0),
        helper.make_node("Add", ["summed", "bias"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "sluice_filter",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "L"])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N"]),
        ],
        initializer=[w, b, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = 8
    model.producer_name = "sluice"
    helper.set_model_props(model, {_META_KEY: meta.model_dump_json()})
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def content_version(weights: npt.NDArray[np.float32], bias: float, threshold: float) -> str:
    h = hashlib.sha256(weights.astype(np.float32).tobytes())
    h.update(np.array([bias, threshold], dtype=np.float64).tobytes())
    return h.hexdigest()[:12]


class FilterModel:
    """One loaded model version with its own score caches (a swap replaces them together)."""

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        try:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own untyped errors for corrupt files
            raise FilterModelError(source, f"not a loadable ONNX model ({exc})") from None
        raw = session.get_modelmeta().custom_metadata_map.get(_META_KEY)
        if raw is None:
            raise FilterModelError(source, f"ONNX model without Sluice metadata ({_META_KEY})")
        try:
            meta = ModelMetadata.model_validate_json(raw)
        except ValidationError as exc:
            raise FilterModelError(source, f"invalid Sluice metadata: {exc}") from None
        if meta.features.normalizer_version != NORMALIZER_VERSION:
            raise FilterModelError(
                source,
                f"trained with normalizer v{meta.features.normalizer_version}, "
                f"this Sluice implements v{NORMALIZER_VERSION}",
            )
        if [i.name for i in session.get_inputs()] != ["ids"]:
            raise FilterModelError(source, "graph input is not 'ids' (not a Sluice filter)")
        self.data = data
        self.source = source
        self.meta = meta
        self._session = session
        self._by_key: dict[bytes, float] = {}
        self._template_by_key: dict[bytes, str] = {}  # the same keys: their line shapes
        self._by_template: dict[str, float] = {}

    @classmethod
    def from_path(cls, path: str | Path) -> FilterModel:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise FilterModelError(str(path), f"cannot read ({exc.strerror})") from None
        return cls(data, source=str(path))

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def threshold(self) -> float:
        return self.meta.threshold

    def with_threshold(self, threshold: float, validation: ValidationMetrics | None) -> FilterModel:
        """The same weights with another decision threshold (a new version)."""
        import onnx
        from onnx import numpy_helper

        proto = onnx.load_from_string(self.data)
        inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
        weights, bias = inits["weights"].astype(np.float32), float(inits["bias"])
        meta = self.meta.model_copy(
            update={
                "threshold": threshold,
                "validation": validation,
                "version": content_version(weights, bias, threshold),
            }
        )
        return FilterModel(build_onnx(weights, bias, meta), source=f"trained:{meta.version}")

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.data)

    def score_templates(self, templates: Sequence[str]) -> npt.NDArray[np.float32]:
        """Scores straight from ONNX Runtime, no cache."""
        if not templates:
            return np.zeros(0, dtype=np.float32)
        ids = featurize(templates, self.meta.features)
        out = self._session.run(["score"], {"ids": ids})[0]
        return np.asarray(out, dtype=np.float32)

    def score(self, lines: Sequence[str]) -> npt.NDArray[np.float32]:
        """Scores in [0, 1] for a batch; each distinct masked form is looked up once."""
        forms, index = mask_batch(lines)
        return self._resolve(forms)[0][index]

    def score_with_templates(
        self, lines: Sequence[str]
    ) -> tuple[npt.NDArray[np.float32], list[str]]:
        """Scores and the template (line shape) of each line: scoring works them out anyway."""
        forms, index = mask_batch(lines)
        scores, templates = self._resolve(forms)
        return scores[index], list(map(templates.__getitem__, index.tolist()))

    def _resolve(self, forms: list[bytes]) -> tuple[npt.NDArray[np.float32], list[str]]:
        """Scores and templates of distinct masked forms: cached by form, each new form's
        template worked out once, ONNX run only on templates never scored."""
        get = self._by_key.get
        scores = np.fromiter(map(get, forms, repeat(math.nan)), dtype=np.float32, count=len(forms))
        templates = list(map(self._template_by_key.get, forms))
        missing = np.flatnonzero(np.isnan(scores)).tolist()
        if not missing:
            return scores, templates  # type: ignore[return-value]
        fresh = [forms[i] for i in missing]
        shapes = [template_of_masked(f) for f in fresh]
        known = self._by_template
        unknown = [t for t in dict.fromkeys(shapes) if t not in known]
        if unknown:
            if len(known) + len(unknown) > CACHE_MAX:
                known.clear()
            known.update(zip(unknown, self.score_templates(unknown).tolist(), strict=True))
        if len(self._by_key) + len(fresh) > CACHE_MAX:
            self._by_key.clear()
            self._template_by_key.clear()
        for i, f, t in zip(missing, fresh, shapes, strict=True):
            s = known.get(t)
            if s is None:  # cleared just now with this batch's own templates in it
                s = float(self.score_templates([t])[0])
            scores[i], templates[i] = s, t
            self._by_key[f] = s
            self._template_by_key[f] = t
        return scores, templates  # type: ignore[return-value]

    def describe(self) -> dict[str, object]:
        d: dict[str, object] = json.loads(self.meta.model_dump_json())
        d["source"] = self.source
        d["size_bytes"] = len(self.data)
        return d
