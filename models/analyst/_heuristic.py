"""A deterministic analyst with no network: the offline default and the degraded fallback."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sluice.models.analyst._bundle import Bundle, Digest, compress, is_alarming
from sluice.models.analyst._schema import (
    AffectedService,
    Analysis,
    AnalysisKind,
    ErrorCategory,
    GraphEdge,
    IncidentReport,
    Provenance,
    RootCause,
    Severity,
    TemplateVerdict,
)
from sluice.models.analyst._signals import ORIGIN_KINDS, PRECISE_KINDS, Signal, signal_scores

__all__ = ["HeuristicAnalyst"]

_CRITICAL_WORDS = (
    "outage",
    "unavailable",
    "fatal",
    "panic",
    "out of memory",
    "oom",
    "connection refused",
    "no route to host",
)


class HeuristicAnalyst:
    """Fills the incident report from the bundle alone.

    - severity from levels and alarm keywords;
    - severity: critical on fatal levels or outage words; high when errors propagate (in at
      least two traces, more than one service logs alarming lines); warning for isolated errors;
    - affected services ranked by their share of anomalous events (alarming templates);
    - graph edges from trace context;
    - root-cause candidate: the most upstream failing service, read from traces as the service
      that logs the first alarming line of a trace most often (a failure starts at the
      dependency and travels up to its callers); without trace context, the largest share.
    """

    name = "heuristic"

    def __init__(self, prompt_token_budget: int = 6000, examples_per_template: int = 3) -> None:
        self._budget = prompt_token_budget
        self._k = examples_per_template

    @staticmethod
    def _trace_evidence(bundle: Bundle) -> tuple[Counter[str], int]:
        """Origin votes (first alarming service per trace) and traces where errors propagate."""
        first: dict[str, tuple[float, int, str]] = {}
        failing: dict[str, set[str]] = {}
        for i, e in enumerate(bundle.events):
            if not e.trace_id or not is_alarming(e.level, e.text):
                continue
            key = (e.ts.timestamp() if e.ts else 0.0, i, e.service)
            if e.trace_id not in first or key < first[e.trace_id]:
                first[e.trace_id] = key
            failing.setdefault(e.trace_id, set()).add(e.service)
        votes = Counter(v[2] for v in first.values())
        return votes, sum(1 for services in failing.values() if len(services) > 1)

    async def analyze(self, bundle: Bundle) -> Analysis:
        return self.from_digest(bundle, compress(bundle, self._budget, self._k), "heuristic")

    def from_digest(
        self,
        bundle: Bundle,
        digest: Digest,
        kind: AnalysisKind,
        error: str | None = None,
        error_category: ErrorCategory | None = None,
    ) -> Analysis:
        bad = [g for g in digest.groups if g.alarming]
        per_service: Counter[str] = Counter()
        for g in bad:
            per_service.update(g.services)
        total_bad = sum(per_service.values())
        origins, propagating = self._trace_evidence(bundle)
        text = " ".join(g.template for g in bad)
        severity: Severity
        if any(g.severity >= 5 for g in bad) or any(w in text for w in _CRITICAL_WORDS):
            severity = "critical"
        elif propagating >= 2:
            severity = "high"
        elif bad:
            severity = "warning"
        else:
            severity = "info"
        edges = digest.edges
        ranked = [s for s, _ in per_service.most_common()]
        voted = [s for s, _ in origins.most_common() if s in per_service]
        root = voted[0] if voted else (ranked[0] if ranked else None)
        if bundle.signals is not None:
            root, ranked, severity = _with_signals(
                bundle.signals, per_service, origins, edges, root, ranked, severity
            )
        if root is not None:  # the origin leads the list of affected services
            ranked = [root, *(s for s in ranked if s != root)]
        said = {x.service: x.text for x in bundle.signals or ()}
        affected = [
            AffectedService(
                service=s,
                role="root_cause" if s == root else "impacted",
                evidence=(
                    f"{per_service[s]} of {total_bad} anomalous events ("
                    + ", ".join(g.id for g in bad if s in g.services)[:200]
                    + ")"
                )
                if per_service[s] or s not in said
                else f"signal: {said[s][:200]}",
            )
            for s in ranked[:10]
        ]
        graph = [GraphEdge(source=a, target=b, evidence=f"{n} traces") for a, b, n in edges[:30]]
        causes = []
        if root is not None:
            share = per_service[root] / total_bad if total_bad else 0.0
            top = next((g.template for g in bad if root in g.services), said.get(root, ""))
            causes.append(
                RootCause(
                    service=root,
                    description=f"{top[:300]}",
                    confidence=round(min(0.9, 0.3 + 0.5 * share), 3),
                )
            )
        if root and not per_service:  # raised by a signal alone
            title = f"{root} went silent in {bundle.scope}"
        elif root:
            title = (
                f"{len(per_service)} service(s) logging errors in {bundle.scope}; "
                f"likely origin {root}"
            )
        else:
            title = f"No anomaly evident in {bundle.scope}"
        summary = (
            f"{sum(g.count for g in bad)} anomalous events in {len(bad)} templates across "
            f"{len(per_service)} services out of {digest.n_events} forwarded events."
        )
        recs = (
            [
                f"Check recent changes, health and dependencies of {root}.",
                "Watch the impacted callers recover once the origin is fixed.",
            ]
            if root
            else []
        )
        report = IncidentReport(
            scope=bundle.scope,
            is_incident=bool(bad) and severity in ("critical", "high"),
            severity=severity,
            title=title,
            summary=summary,
            first_seen=digest.first,
            last_seen=digest.last,
            affected_services=affected,
            service_graph=graph,
            root_causes=causes,
            recommendations=recs,
        )
        verdicts = [TemplateVerdict(template_id=g.id, relevant=g.alarming) for g in digest.groups]
        prov = Provenance(
            analysis=kind,
            filter_version=bundle.filter_version,
            templates_in_prompt=len(digest.included),
            templates_truncated=digest.truncated,
            error=error,
            error_category=error_category,
            redactions=dict(bundle.redactions),
        )
        return Analysis(
            report=report,
            verdicts=verdicts,
            provenance=prov,
            templates={g.id: g.template for g in digest.groups},
        )


#: A signal this strong raises a window on its own (and makes its errors unusual).
_STRONG = 0.8


def _with_signals(
    signals: Sequence[Signal],
    per_service: Counter[str],
    origins: Counter[str],
    edges: Sequence[tuple[str, str, int]],
    root: str | None,
    ranked: list[str],
    severity: Severity,
) -> tuple[str | None, list[str], Severity]:
    """The ranking and severity with the filter stage's signals.

    A service that went silent, dropped or got slow ranks as the origin when it is connected to
    the failing services (an edge in the traces, or a slow edge from one of them): its callers'
    errors are the symptom. A missing step (a line that follows another in a trace stopped
    following) names its service whether or not anything near it logs errors: the requests fail
    inside it. Errors of a service that no signal marks as unusual (its lines are neither new
    nor spiking, nothing about it changed) are the noise the baseline already holds: they count
    half, and a window of isolated errors like that stays `info`. A window without errors in
    which a service stopped entirely, or stopped a step it always takes, is a `warning`."""
    failing = set(per_service)
    near = {b for a, b, _ in edges if a in failing} | {a for a, b, _ in edges if b in failing}
    near |= {x.service for x in signals if x.caller in failing}
    callers: dict[str, set[str]] = {}
    for a, b, _ in edges:
        callers.setdefault(b, set()).add(a)
    for x in signals:
        if x.caller:
            callers.setdefault(x.service, set()).add(x.caller)
    strength = signal_scores(signals)
    marked = {x.service for x in signals}
    precise = {x.service for x in signals if x.kind in PRECISE_KINDS and x.strength >= 0.3}
    total_votes = sum(origins.values()) or 1
    total_bad = sum(per_service.values()) or 1

    def takeover(service: str) -> float:
        """How much of its failing callers' evidence a signalled service takes over: their
        errors are what its silence, slowness or missing step looks like from upstream."""
        sig = strength.get(service, 0.0)
        if not sig or not (service in precise or service in failing or service in near):
            return 0.0
        return max(0.0, 2 * min(1.0, sig) - 1)

    takes = {c: f for c in strength if (f := takeover(c)) > 0}
    lost: dict[str, float] = {}  # per failing caller: the most a callee took over
    for c, f in takes.items():
        for u in callers.get(c, set()) & failing:
            if u != c:
                lost[u] = max(lost.get(u, 0.0), f)

    def score(service: str) -> float:
        own = origins[service] / total_votes + 0.5 * per_service[service] / total_bad
        if service not in marked:
            own *= 0.5  # errors the baseline already holds
        own *= 1.0 - lost.get(service, 0.0)
        sig = strength.get(service, 0.0)
        if not sig or not (service in precise or service in failing or service in near):
            return own
        upstream = callers.get(service, set()) & failing - {service}
        if origins:
            explained = sum(origins[c] for c in upstream) / total_votes
        else:  # no traces voted: their share of the errors instead
            explained = sum(per_service[c] for c in upstream) / total_bad
        return own + 0.5 * sig + explained * takes.get(service, 0.0)

    if not failing:  # no errors at all: a service that stopped still raises a warning
        stopped = [x.service for x in signals
                   if (x.kind == "silence" and x.strength >= 0.99)
                   or (x.kind in PRECISE_KINDS and x.strength >= _STRONG)]  # fmt: skip
        if stopped:
            top = max(sorted(set(stopped)), key=score)
            return top, [top, *dict.fromkeys(s for s in stopped if s != top)], "warning"
        return root, ranked, severity
    origin = {x.service for x in signals if x.kind in ORIGIN_KINDS}
    candidates = failing | {s for s in origin if s in near} | precise
    root = max(sorted(candidates), key=score)
    ranked = sorted(candidates, key=lambda s: (-score(s), s))
    # what makes the errors unusual: a signal about them or a service near them; a missing
    # step only when strong (a handful of missed steps happens with ordinary noise too)
    unusual = any(
        (x.kind not in PRECISE_KINDS and x.service in failing | near) or x.strength >= _STRONG
        for x in signals
    )
    if severity == "warning" and not unusual:
        severity = "info"
    return root, ranked, severity
