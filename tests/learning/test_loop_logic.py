"""The learning loop's pure logic: labels, the time split, the publication rule, the recall
estimate (its coverage, by simulation), a window's outcomes, and the registry's folding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from sluice.models.analyst import (
    AffectedService,
    Analysis,
    IncidentReport,
    Provenance,
    TemplateVerdict,
)
from sluice.models.filter import Example, ValidationMetrics, train
from sluice.stream import PipelineSettings, RetrainSettings
from sluice.stream.analysis import AnalysisState, MemoryStore
from sluice.stream.learning.recall import estimate_recall, poisson_interval
from sluice.stream.learning.registry import Activation, Registry, rollback_target
from sluice.stream.learning.retrain import compare, retrain, time_split, training_labels
from sluice.stream.records import Event, Feedback, Outcome, Suspect, SuspectBatch

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fb(template: str, label: bool, source: str, minute: int, weight: float = 1.0) -> Feedback:
    return Feedback(
        template=template,
        label=label,
        source=source,  # type: ignore[arg-type]
        weight=weight,
        model_version="m",
        score=None,
        at=T0 + timedelta(minutes=minute),
    )


def test_human_labels_win_latest_wins_heuristic_left_out() -> None:
    labels = training_labels(
        [
            fb("a", True, "llm", 1, 5.0),
            fb("a", False, "human", 0),  # older, but a person's
            fb("a", True, "llm", 2, 7.0),
            fb("b", True, "llm", 1),
            fb("b", False, "llm", 3),  # the latest verdict of the same source
            fb("c", True, "heuristic", 1),
            fb("d", True, "audit", 4, 200.0),
        ]
    )
    got = {x.template: (x.label, x.source, x.weight) for x in labels}
    assert got == {
        "a": (False, "human", 7.0),  # a person's label weighs what the LLM's did
        "b": (False, "llm", 1.0),
        "d": (True, "audit", 200.0),  # an audit sample stands for 1/p events
    }
    assert [x.template for x in labels] == ["a", "b", "d"]  # in the order they were given
    with_h = training_labels([fb("c", True, "heuristic", 1)], include_heuristic=True)
    assert [x.template for x in with_h] == ["c"]


def test_feedback_keys_keep_a_person_apart_from_the_llm() -> None:
    assert fb("t", True, "llm", 0).key() != fb("t", True, "human", 0).key()
    assert fb("t", True, "llm", 0).key() == fb("t", False, "llm", 5).key()


def test_time_split_holds_out_the_newest() -> None:
    labels = training_labels([fb(f"t{i}", i % 2 == 0, "llm", i) for i in range(10)])
    tr, held = time_split(labels, 0.3)
    assert [x.template for x in held] == ["t7", "t8", "t9"]
    assert max(x.at for x in tr) < min(x.at for x in held)


def vm(recall: float, fr: float) -> ValidationMetrics:
    return ValidationMetrics(
        precision=0.5, recall=recall, forward_ratio=fr, positive_ratio=0.1, n=9
    )


@pytest.mark.parametrize(
    ("champion", "challenger", "accepted"),
    [
        (vm(0.99, 0.10), vm(0.99, 0.10), True),
        (vm(0.99, 0.10), vm(0.98, 0.05), False),  # recall lower
        (vm(0.99, 0.10), vm(1.00, 0.105), True),  # within 10%
        (vm(0.99, 0.10), vm(1.00, 0.12), False),  # forwards too much more
        (vm(0.50, 0.02), vm(0.99, 0.12), True),  # a champion under target is no baseline
        (vm(0.50, 0.02), vm(0.50, 0.12), False),  # ... unless recall does not improve
    ],
)
def test_publication_rule(
    champion: ValidationMetrics, challenger: ValidationMetrics, accepted: bool
) -> None:
    assert compare(champion, challenger, 0.99, 0.1).accepted is accepted


def test_retrain_learns_what_the_champion_missed() -> None:
    base = [Example(f"ERROR disk {w} failed", True) for w in ("alpha", "beta", "gamma")] + [
        Example(f"INFO disk {w} ok", False) for w in ("alpha", "beta", "gamma", "delta")
    ]
    champion = train(base * 5)
    words = [f"w{chr(97 + i)}{chr(97 + j)}" for i in range(6) for j in range(6)]
    feedback = [
        fb(f"warn queue {w} stalled", True, "audit", i, 200.0) for i, w in enumerate(words)
    ] + [fb(f"info queue {w} drained", False, "llm", i) for i, w in enumerate(words)]
    result = retrain(champion, feedback, RetrainSettings(), base=base)
    assert result.comparison is not None and result.challenger is not None
    c = result.comparison
    assert c.champion.recall < 0.5 and c.challenger.recall == 1.0 and c.accepted
    assert result.challenger.meta.parent_version == champion.version
    too_few = retrain(champion, feedback[:20], RetrainSettings(min_holdout=10))
    assert too_few.challenger is None and "4 held out, fewer than 10" in too_few.reason


def outcome(version: str, fp: int, ap: int, an: int, rate: float) -> Outcome:
    return Outcome(
        scope="s",
        window_end=T0,
        model_version=version,
        audit_rate=rate,
        analysis="llm",
        flagged_positive=fp,
        audited_positive=ap,
        audited_negative=an,
        at=T0,
    )


def test_recall_estimate_by_hand() -> None:
    est = estimate_recall([outcome("v", 90, 1, 99, 0.1), outcome("v", 10, 0, 50, 0.1)])["v"]
    assert est.recall == pytest.approx(100 / (100 + 10))  # 1 missed in the sample -> 10 missed
    lo, hi = poisson_interval(1)
    assert est.low == pytest.approx(100 / (100 + hi / 0.1))
    assert est.high == pytest.approx(100 / (100 + lo / 0.1))
    # Heuristic analyses echo the filter: not counted.
    heur = outcome("h", 5, 0, 5, 0.1).model_copy(update={"analysis": "heuristic"})
    assert "h" not in estimate_recall([heur])


def test_recall_interval_covers_the_truth_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    covered, trials = 0, 2000
    for _ in range(trials):
        positives = int(rng.integers(50, 2000))
        true_recall = rng.uniform(0.6, 1.0)
        tp = int(rng.binomial(positives, true_recall))
        fn = positives - tp
        rate = float(rng.choice([0.005, 0.02, 0.1]))
        ap = int(rng.binomial(fn, rate))
        est = estimate_recall([outcome("v", tp, ap, 0, rate)])["v"]
        truth = tp / positives
        assert est.low is not None and est.high is not None
        covered += est.low <= truth <= est.high
    assert covered / trials >= 0.94


def _first_sight_outcome(rng: np.random.Generator, k: int, rate: float) -> tuple[Outcome, float]:
    """One model version's outcome when relevant templates the model misses are forwarded on
    first sight: each missed template's n-th event is drawn with max(rate, min(1, k/n))."""
    tp = int(rng.integers(0, 400))
    census = raised = 0
    weight = 0.0
    plain = 0
    fn = 0
    for _ in range(int(rng.integers(1, 12))):  # missed templates, of very unequal sizes
        n = int(rng.choice([2, 10, 100, 1000, 20000]))
        fn += n
        p = np.maximum(rate, np.minimum(1.0, k / np.arange(1, n + 1)))
        drawn = rng.random(n) < p
        census += int((drawn & (p >= 1)).sum())
        mid = drawn & (p < 1) & (p > rate)
        raised += int(mid.sum())
        weight += float((1 / p[mid]).sum())
        plain += int((drawn & (p <= rate)).sum())
    o = Outcome(
        scope="s", window_end=T0, model_version="v", audit_rate=rate, analysis="llm",
        flagged_positive=tp, audited_positive=census + raised + plain, audited_negative=0,
        census_positive=census, raised_positive=raised, raised_weight=weight, at=T0,
    )  # fmt: skip
    return o, tp / (tp + fn) if tp + fn else 1.0


def test_recall_interval_covers_the_truth_with_first_sight_probabilities() -> None:
    """Mixed inclusion probabilities (p = 1, k/n, the audit rate): unbiased, and covering."""
    rng = np.random.default_rng(11)
    covered, trials, errors = 0, 1500, []
    for _ in range(trials):
        rate = float(rng.choice([0.005, 0.02]))
        o, truth = _first_sight_outcome(rng, 3, rate)
        est = estimate_recall([o])["v"]
        assert est.low is not None and est.high is not None and est.recall is not None
        covered += est.low <= truth <= est.high
        errors.append(est.missed_estimate)
    assert covered / trials >= 0.94


def test_missed_estimate_is_unbiased_with_first_sight_probabilities() -> None:
    rng = np.random.default_rng(5)
    n, k, rate = 3000, 3, 0.01
    p = np.maximum(rate, np.minimum(1.0, k / np.arange(1, n + 1)))
    estimates = []
    for _ in range(400):
        drawn = rng.random(n) < p
        mid = drawn & (p < 1) & (p > rate)
        o = Outcome(
            scope="s", window_end=T0, model_version="v", audit_rate=rate, analysis="llm",
            flagged_positive=100, audited_positive=int(drawn.sum()), audited_negative=0,
            census_positive=int((drawn & (p >= 1)).sum()), raised_positive=int(mid.sum()),
            raised_weight=float((1 / p[mid]).sum()), at=T0,
        )  # fmt: skip
        estimates.append(estimate_recall([o])["v"].missed_estimate)
    assert np.mean(estimates) == pytest.approx(n, rel=0.05)


def test_a_window_yields_feedback_and_outcomes_per_model_version() -> None:
    cfg = PipelineSettings(audit_rate=0.01)
    state = AnalysisState(cfg, MemoryStore(), lambda: 0.0, suspects_topic="s")

    def sus(msg: str, version: str, audit: bool) -> Suspect:
        return Suspect(
            event=Event(ts=T0, service="api", message=msg),
            score=0.9,
            model_version=version,
            audit=audit,
            sampling_probability=0.01 if audit else 1.0,
            scope="s",
        )

    suspects = [
        sus("ERROR db timeout", "v1", False),
        sus("ERROR db timeout", "v2", False),
        sus("WARN queue stalled", "v2", True),
        sus("INFO all good", "v2", True),
        sus("INFO unseen line", "v2", True),
    ]
    state.on_suspects(0, 0, SuspectBatch(scope="s", suspects=suspects))
    state.close_all("s")
    ((seq, _),) = state.due("s", ignore_wait=True)
    w = state.window("s", seq)
    templates = {"T1": "error db timeout", "T2": "warn queue stalled", "T3": "info all good"}
    report = IncidentReport(
        scope="s", is_incident=True, severity="warning", title="t", summary="s",
        first_seen=None, last_seen=None,
        affected_services=[AffectedService(service="api", role="root_cause", evidence="e")],
        service_graph=[], root_causes=[], recommendations=[],
    )  # fmt: skip
    analysis = Analysis(
        report=report,
        verdicts=[
            TemplateVerdict(template_id="T1", relevant=True),
            TemplateVerdict(template_id="T2", relevant=True),
            TemplateVerdict(template_id="T3", relevant=False),
        ],
        provenance=Provenance(analysis="llm", filter_version="v2"),
        templates=templates,
    )
    state.on_analysed(w.analysed(analysis, T0))
    out = state.publish("s")
    by_template = {f.template: f for f in out.feedback}
    assert by_template["warn queue stalled"].source == "audit"
    assert by_template["warn queue stalled"].weight == pytest.approx(100.0)
    assert by_template["error db timeout"].source == "llm"
    assert by_template["error db timeout"].weight == 2.0
    o = {x.model_version: x for x in out.outcomes}
    assert (o["v1"].flagged_positive, o["v1"].audited_positive) == (1, 0)
    assert (o["v2"].flagged_positive, o["v2"].audited_positive, o["v2"].audited_negative) == (
        1,
        1,
        1,
    )
    assert o["v2"].unlabelled == 1 and o["v2"].audit_rate == 0.01


def test_registry_keeps_the_active_model_when_a_record_is_bad() -> None:
    m = train([Example("ERROR x failed", True), Example("INFO x ok", False)] * 5)
    act = Activation(version=m.version, reason="promote", by="t", at=T0)
    reg = Registry()
    reg.apply(b"model/" + m.version.encode(), m.data, [], "models:0:0", 0)
    reg.apply(
        b"active", m.data, [("sluice-activation", act.model_dump_json().encode())], "m:0:1", 1
    )
    bad = Activation(version="other", reason="promote", by="t", at=T0, previous=[m.version])
    reg.apply(
        b"active", m.data, [("sluice-activation", bad.model_dump_json().encode())], "m:0:2", 2
    )
    reg.apply(
        b"active", b"junk", [("sluice-activation", act.model_dump_json().encode())], "m:0:3", 3
    )
    reg.apply(b"model/x", b"junk", [], "m:0:4", 4)
    assert reg.active == act and list(reg.entries) == [m.version]
    assert len(reg.rejected) == 3
    assert reg.entry(m.version[:6]).version == m.version
    with pytest.raises(Exception, match="nothing to roll back to"):
        rollback_target(reg)
