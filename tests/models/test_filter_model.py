"""Training, ONNX export and loading, thresholds, hot swap and bad input for the filter."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sluice.models.filter import (
    Example,
    FeatureSpec,
    Filter,
    FilterModel,
    FilterModelError,
    KeywordFilter,
    OnnxFilter,
    TrainingError,
    choose_threshold,
    default_model,
    normalize_batch,
    template_features,
    train,
)

ROOT = Path(__file__).resolve().parents[2]

ERR = [
    "ERROR payment-service: connection to {ip}:5432 refused after {n} ms",
    "FATAL kernel: machine check exception on cpu {n}",
    "ERROR order {uuid} failed: java.net.SocketTimeoutException: Read timed out",
    "WARN disk /dev/sd{c} is {n}% full, writes failing",
]
OK = [
    "INFO user {uuid} logged in from {ip}",
    "INFO GET /api/v1/items/{n} 200 in {n} ms",
    "DEBUG cache hit ratio {n} percent",
    "INFO scheduled job {n} finished",
    "INFO heartbeat from {ip} ok",
]


def synth(n: int, pos_rate: float, seed: int) -> list[Example]:
    rnd = random.Random(seed)

    def fill(t: str) -> str:
        return t.format(
            ip=f"10.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}",
            n=rnd.randint(0, 99999),
            uuid=f"{rnd.getrandbits(128):032x}",
            c="abc"[rnd.randint(0, 2)],
        )

    return [
        Example(fill(rnd.choice(ERR)), True)
        if rnd.random() < pos_rate
        else Example(fill(rnd.choice(OK)), False)
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def trained() -> FilterModel:
    return train(synth(3000, 0.1, seed=1), seed=0)


def test_round_trip_onnx_matches_training_scores(trained: FilterModel, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    trained.save(path)
    loaded = FilterModel.from_path(path)
    assert loaded.version == trained.version and loaded.threshold == trained.threshold
    lines = [e.text for e in synth(500, 0.3, seed=2)]
    # Reference: the training-time linear model recomputed in numpy from the exported weights.
    import onnx
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    w = inits["weights"].astype(np.float64)
    ids = [template_features(t, loaded.meta.features) for t in normalize_batch(lines)]
    ref = 1 / (1 + np.exp(-(np.array([w[r].sum() for r in ids]) + float(inits["bias"]))))
    got = loaded.score(lines)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # The cache gives exactly what ONNX Runtime gives without it.
    np.testing.assert_allclose(got, loaded.score_templates(normalize_batch(lines)), atol=1e-6)
    np.testing.assert_array_equal(loaded.score(lines), got)  # second pass: from the cache


def test_metadata_is_self_contained(trained: FilterModel) -> None:
    m = trained.meta
    assert 0 < m.threshold < 1
    assert m.n_train == 3000 and m.source_mix == {"human": 3000}
    assert m.validation is not None and m.validation.n > 0
    assert m.features.n_buckets == 2**18 and m.calibration == "platt"


def test_threshold_meets_target_recall_on_validation(trained: FilterModel) -> None:
    assert trained.meta.validation is not None
    assert trained.meta.validation.recall >= 0.99
    fresh = synth(2000, 0.1, seed=3)
    flags = trained.score([e.text for e in fresh]) >= trained.threshold
    labels = np.array([e.label for e in fresh])
    assert flags[labels].mean() >= 0.99
    assert flags[~labels].mean() < 0.05  # and it does not forward everything


def test_scores_are_calibrated(trained: FilterModel) -> None:
    fresh = synth(4000, 0.2, seed=4)
    s = trained.score([e.text for e in fresh]).astype(np.float64)
    y = np.array([e.label for e in fresh], dtype=np.float64)
    assert abs(s.mean() - y.mean()) < 0.05  # predicted rate ≈ observed rate


def test_choose_threshold_weighted() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    labels = np.array([True, True, True, False, True])
    assert choose_threshold(scores, labels, np.ones(5), 0.75) == 0.7
    assert choose_threshold(scores, labels, np.ones(5), 1.0) == 0.1
    # A heavy (audit, 1/p) positive at 0.1 forces the threshold down to reach it.
    w = np.array([1, 1, 1, 1, 10.0])
    assert choose_threshold(scores, labels, w, 0.5) == 0.1


def test_training_errors_are_clear() -> None:
    with pytest.raises(TrainingError, match="no examples"):
        train([])
    with pytest.raises(TrainingError, match="both positive and negative"):
        train([Example("x", True)] * 10)


def test_bad_inputs_score(trained: FilterModel) -> None:
    huge = (
        "ERROR payment-service: connection to 10.1.2.3:5432 refused after 7 ms " + "x" * 1_000_000
    )
    lines = ["", huge, "ERROR \ufffd\ufffd bad bytes", "a\nb\rc"]
    s = trained.score(lines)
    assert s.shape == (4,) and np.isfinite(s).all()
    assert s[1] >= trained.threshold  # the 1 MB line is truncated, not dropped


def test_corrupt_model_is_rejected_and_current_stays(trained: FilterModel, tmp_path: Path) -> None:
    f = OnnxFilter(trained)
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(trained.data[: len(trained.data) // 2])
    with pytest.raises(FilterModelError, match=r"broken\.onnx"):
        FilterModel.from_path(bad)
    with pytest.raises(FilterModelError, match="upload"):
        f.swap_bytes(b"not an onnx file", source="upload")
    with pytest.raises(FilterModelError, match=r"missing\.onnx"):
        FilterModel.from_path(tmp_path / "missing.onnx")
    import onnx

    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    plain = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    plain.ir_version = 8
    with pytest.raises(FilterModelError, match="without Sluice metadata"):
        f.swap_bytes(plain.SerializeToString(), source="plain")
    assert f.version == trained.version


def test_hot_swap_under_concurrent_scoring(trained: FilterModel) -> None:
    other = train(synth(3000, 0.1, seed=9), seed=1, regularization=0.5)
    assert other.version != trained.version
    f = OnnxFilter(trained)
    lines = [e.text for e in synth(256, 0.2, seed=5)]
    expected = {m.version: m.score(lines) for m in (trained, other)}
    errors: list[BaseException] = []
    seen: set[str] = set()
    stop = threading.Event()

    def scorer() -> None:
        try:
            while not stop.is_set():
                a = f.assess(lines)
                seen.add(a.model_version)
                # scores, flags and version all come from one model
                np.testing.assert_array_equal(a.scores, expected[a.model_version])
                np.testing.assert_array_equal(a.flagged, a.scores >= a.threshold)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=scorer) for _ in range(4)]
    for t in threads:
        t.start()
    import time

    for i in range(100):
        f.swap(other if i % 2 == 0 else trained)
        time.sleep(0.002)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert seen == {trained.version, other.version}


@pytest.mark.parametrize("make", [lambda: OnnxFilter(default_model()), lambda: KeywordFilter()])
def test_filters_satisfy_the_protocol(make: Callable[[], Filter]) -> None:
    f = make()
    assert isinstance(f, Filter)
    a = f.assess(["ERROR database connection failed with exception", "INFO ok"])
    assert a.flagged.tolist() == [True, False]


def test_default_model_ships_and_is_small() -> None:
    m = default_model()
    assert len(m.data) <= 5 * 1024 * 1024
    # Its validation figures: the split its training held out, at the threshold it ships with
    # (train_default); the held-out systems' figures are the README's table.
    assert m.meta.validation is not None and m.meta.validation.recall >= 0.95
    assert {"dataset", "heuristic"} <= set(m.meta.source_mix)
    assert m.meta.features.subwords == 4 and m.meta.features.severity == 1


def test_default_model_sees_failures_of_software_it_never_saw() -> None:
    """bench/data/generic_lines.jsonl: 50 failure and 50 routine lines of common software
    (kernel, databases, web servers, runtimes, Kubernetes, systemd, TLS, disks), none from a
    training source, written once before the model was measured on them (the bar below was set
    after the shipped model's 33 of 50 was seen; the words-only model's 11 of 50 fails it)."""
    rows = [json.loads(x) for x in (ROOT / "bench" / "data" / "generic_lines.jsonl").open()]
    m = default_model()
    flagged = m.score([r["text"] for r in rows]) >= m.threshold
    y = np.array([r["label"] for r in rows])
    assert (flagged & y).sum() / y.sum() >= 0.6  # the words-only model forwarded 11 of 50
    assert (flagged & ~y).sum() / (~y).sum() <= 0.05


def test_subwords_and_severity_tie_unseen_failure_words_to_known_ones() -> None:
    spec = FeatureSpec(subwords=4, severity=1, max_features=1024)
    npe = set(template_features("java.lang.nullpointerexception", spec))
    known = set(template_features("exception", spec))
    assert npe & known  # subwords: `xcep`, `tion>` ... and the severity features
    plain = FeatureSpec()
    assert not set(template_features("java.lang.nullpointerexception", plain)) & set(
        template_features("exception", plain)
    )
    assert template_features("info all good", spec) == template_features(
        "info all good", spec.model_copy(update={"severity": 0})
    )


@pytest.mark.parametrize("model", ["shipped", "moved"])
def test_validation_figures_agree_with_each_other(trained: FilterModel, model: str) -> None:
    """One split, every figure from it: precision x forward ratio and recall x positive ratio
    are both the share of true positives (`sluice model info` showed 0.105 and 0.037)."""
    from sluice.models.filter._train import validation_at

    if model == "shipped":
        m = default_model()
    else:  # a threshold moved after training, its figures measured again at the new one
        examples = synth(3000, 0.1, seed=1)
        t = trained.threshold / 4
        m = trained.with_threshold(t, validation_at(trained, examples, t))
        assert m.meta.validation is not None
        before = trained.meta.validation
        assert before is not None and m.meta.validation.forward_ratio >= before.forward_ratio
    v = m.meta.validation
    assert v is not None
    assert v.precision * v.forward_ratio == pytest.approx(v.recall * v.positive_ratio, rel=1e-6)
    assert v.recall >= m.meta.target_recall - 0.01  # a lower threshold only adds recall
