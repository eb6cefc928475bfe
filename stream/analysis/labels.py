"""What a window's final analysis teaches the learning loop: feedback per template (labels for
the filter) and outcomes per filter version (the recall estimate, signals' thresholds)."""

from __future__ import annotations

from datetime import datetime

from sluice.models.analyst import Analysis
from sluice.models.filter import normalize_batch
from sluice.stream.analysis.windows import ClosedWindow
from sluice.stream.records import Feedback, Outcome, SignalVerdict, Suspect

__all__ = ["labels"]


def labels(
    w: ClosedWindow, analysis: Analysis, now: datetime, audit_rate: float
) -> tuple[list[Feedback], list[Outcome]]:
    """What a window's final analysis teaches: per template a label, per filter version counts.

    Feedback: one record per template with a verdict. Its weight is the events it stands for in
    this window: each flagged event counts 1, each audit sample 1/p with its own p (it represents
    the unflagged events it was drawn from; a first sighting drawn with p = 1 only itself).
    Source `audit` when every event of the template was an audit sample
    (a template the filter missed), `llm` otherwise, `heuristic` when no LLM answered.
    Outcomes: per filter version, events by (flagged | audited) x (relevant | not), for the recall
    estimate; and the window's signals with what the analysis made of them (named the service,
    as the root cause), for thresholds learned later.
    """
    templates = normalize_batch([s.event.message for s in w.suspects])
    verdict = {
        analysis.templates[v.template_id]: v.relevant
        for v in analysis.verdicts
        if v.template_id in analysis.templates
    }
    kind = analysis.provenance.analysis
    first: dict[str, Suspect] = {}
    weight: dict[str, float] = {}
    all_audit: dict[str, bool] = {}
    # version -> flagged +/-, audited +/-, unlabelled, census +, raised +, raised -
    counts: dict[str, list[int]] = {}
    raised_weight: dict[str, float] = {}
    rates: dict[str, float] = {}
    for s, t in zip(w.suspects, templates, strict=True):
        if s.exemplar is not None:  # a span the filter stage described: no line to learn from
            continue
        first.setdefault(t, s)
        p = s.sampling_probability if s.audit and s.sampling_probability > 0 else 1.0
        weight[t] = weight.get(t, 0.0) + 1.0 / p
        all_audit[t] = all_audit.get(t, True) and s.audit
        c = counts.setdefault(s.model_version, [0] * 8)
        y = verdict.get(t)
        c[4 if y is None else 2 * s.audit + (not y)] += 1
        if not s.audit or y is None:
            continue
        if s.reason == "first_sight" or p >= 1.0:  # drawn with more than the audit rate
            if p >= 1.0:
                c[5] += y
            elif y:
                c[6] += 1
                raised_weight[s.model_version] = raised_weight.get(s.model_version, 0.0) + 1 / p
            else:
                c[7] += 1
        else:
            rates[s.model_version] = s.sampling_probability
    feedback = []
    for t, y in verdict.items():
        if t not in first:
            continue
        s = first[t]
        source = ("audit" if all_audit[t] else "llm") if kind == "llm" else "heuristic"
        feedback.append(
            Feedback(
                template=t,
                text=s.event.message[:2000],
                label=y,
                source=source,
                weight=weight[t],
                model_version=s.model_version,
                score=s.score,
                scope=w.scope,
                at=now,
            )
        )
    report = analysis.report
    named = {a.service for a in report.affected_services} | {c.service for c in report.root_causes}
    roots = {c.service for c in report.root_causes}
    verdicts = [
        SignalVerdict(
            kind=x.kind,
            service=x.service,
            strength=x.strength,
            caller=x.caller,
            named=x.service in named,
            root_cause=x.service in roots,
        )
        for x in w.signals or ()
    ]
    outcomes = [
        Outcome(
            scope=w.scope,
            window_end=w.end,
            model_version=version,
            audit_rate=rates.get(version, audit_rate),
            analysis=kind,
            flagged_positive=c[0],
            flagged_negative=c[1],
            audited_positive=c[2],
            audited_negative=c[3],
            census_positive=c[5],
            raised_positive=c[6],
            raised_weight=raised_weight.get(version, 0.0),
            raised_negative=c[7],
            unlabelled=c[4],
            at=now,
            signals=verdicts,
        )
        for version, c in sorted(counts.items())
    ]
    return feedback, outcomes
