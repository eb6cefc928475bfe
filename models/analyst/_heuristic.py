"""A deterministic analyst with no network: the offline default and the degraded fallback."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sluice.models.analyst._bundle import Bundle, Digest, TemplateGroup, compress, is_alarming
from sluice.models.analyst._rank import with_signals
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

    def candidates(self, bundle: Bundle, digest: Digest, top: int = 3) -> list[str]:
        """The ranking's first `top` services, one line each with what named it (for a
        prompt: evidence, not the answer)."""
        report = self.from_digest(bundle, digest, "heuristic").report
        return [f"{n}. {a.service} ({a.role}): {a.evidence[:160]}"
                for n, a in enumerate(report.affected_services[:top], start=1)]  # fmt: skip

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
            root, ranked, severity = with_signals(
                bundle.signals, per_service, origins, edges, root, ranked, severity,
                bundle.line_signals,
            )  # fmt: skip
        if root is not None:  # the origin leads the list of affected services
            ranked = [root, *(s for s in ranked if s != root)]
        about: dict[str, list[str]] = {}  # per service, its signals' text, strongest first
        for x in bundle.signals or ():
            about.setdefault(x.service, []).append(x.text)
        said = {s: texts[0] for s, texts in about.items()}
        affected = [
            AffectedService(
                service=s, role="root_cause" if s == root else "impacted",
                evidence=_evidence(s, per_service[s], total_bad, bad, about.get(s, [])),
            )
            for s in ranked[:10]
        ]  # fmt: skip
        graph = [GraphEdge(source=a, target=b, evidence=f"{n} traces") for a, b, n in edges[:30]]
        causes = []
        if root is not None:
            share = per_service[root] / total_bad if total_bad else 0.0
            top = next((g.template for g in bad if root in g.services), "")
            if root in said:  # what its own figures say first: the evidence that named it
                top = f"{said[root]}" + (f"; {top}" if top else "")
            causes.append(
                RootCause(
                    service=root,
                    description=f"{top[:300]}",
                    confidence=round(min(0.9, 0.3 + 0.5 * share), 3),
                )
            )
        if root and not per_service:  # raised by a signal alone
            kinds = [x.kind for x in bundle.signals or () if x.service == root]
            what = _WHAT.get(kinds[0], "went silent") if kinds else "went silent"
            title = f"{root} {what} in {bundle.scope}"
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
            is_incident=(bool(bad) or root is not None) and severity in ("critical", "high"),
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


#: A title's verb for a root cause named by a signal alone.
_WHAT = {
    "self_time": "got slow in its own work",
    "edge_latency": "is slow to reach (time outside it on calls into it)",
    "edge_errors": "fails the calls into it",
    "saturation": "is saturated",
    "missing_step": "stopped a step it always takes",
    "slow_edge": "got slow",
}


def _evidence(
    service: str, events: int, total: int, bad: Sequence[TemplateGroup], signals: Sequence[str]
) -> str:
    """What named a service: its anomalous log templates, then its signals (edges with their
    figures, self time, metrics)."""
    parts = []
    if events or not signals:
        ids = ", ".join(g.id for g in bad if service in g.services)[:200]
        parts.append(f"{events} of {total} anomalous events ({ids})")
    parts += [f"signal: {t[:200]}" for t in signals[:3]]
    return "; ".join(parts)[:700]
