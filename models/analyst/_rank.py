"""Root-cause ranking: which service's own anomaly explains the rest of the window.

Why this design. Errors travel up a call graph: when a callee fails, its callers log errors too,
often as many and sometimes first, so the service that logs first is right when the failing
service logs first and alone, and wrong when errors propagate. And the faults that log nothing
(a network delay, CPU contention) show only in spans and metrics. So the ranking looks for the
service whose *own* figures moved, the way MicroRank and Nezha walk toward the deepest anomalous
callee:

- **Telemetry** signals (`TELEMETRY_KINDS`) are each about one service's own figures: its self
  time (not its callees'), the time outside it on calls into it (the network and queue in front
  of it, which its callers' spans include and its own do not), its failed calls, its saturation.
  They make their service a candidate whether or not anything logs, and count fully.
- **Line** signals (silences, missing steps, slow gaps between log lines) count half, as before:
  they are inferred from logs, and measured worse (README, "Root cause").
- **Log errors**: per trace, the service that logged its first alarming line, and each service's
  share of the alarming lines (the evidence when nothing else moved).
- A candidate with strong evidence of its own *takes over* the log evidence of its failing
  callers (their errors are what its fault looks like from upstream), in proportion to its
  strength: a caller that only logs errors because its callee is slow is not the root cause.

With line signals, errors that no signal marks as unusual are what the baseline already holds:
they count half, and a window of them alone stays `info`. Without any error, a service that
stopped (line signals) raises a `warning`; one whose own span or metric figures moved raises a
`warning`, or `high` when its strongest span signal is beyond `_HIGH` (about 7 standard
deviations at the default threshold): a fault that logs nothing is still an incident, while a
pod's metric that moved with no span slower is a `warning` (a batch job uses CPU too).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sluice.models.analyst._schema import Severity
from sluice.models.analyst._signals import (
    ORIGIN_KINDS,
    PRECISE_KINDS,
    TELEMETRY_KINDS,
    Signal,
    signal_scores,
)

__all__ = ["with_signals"]

#: A signal this strong raises a window on its own (and makes its errors unusual).
_STRONG = 0.8
#: A telemetry signal this strong makes a window without errors `high`, not a `warning`.
_HIGH = 0.6
#: A telemetry signal this weak names no candidate (the detector's threshold gives 0.39).
_MIN_TELEMETRY = 0.3


def with_signals(
    signals: Sequence[Signal],
    per_service: Counter[str],
    origins: Counter[str],
    edges: Sequence[tuple[str, str, int]],
    root: str | None,
    ranked: list[str],
    severity: Severity,
    line_signals: bool = True,
) -> tuple[str | None, list[str], Severity]:
    """The root cause, the ranking and the severity, from the log evidence (`per_service`:
    alarming events per service; `origins`: traces whose first alarming line each service
    logged; `edges`: caller -> callee from trace context) and the window's signals
    (`line_signals`: they include the lines', so the line rules apply)."""
    failing = set(per_service)
    telemetry = [x for x in signals if x.kind in TELEMETRY_KINDS]
    lines = [x for x in signals if x.kind not in TELEMETRY_KINDS]
    line_rules = line_signals
    near = {b for a, b, _ in edges if a in failing} | {a for a, b, _ in edges if b in failing}
    near |= {x.service for x in signals if x.caller in failing}
    callers: dict[str, set[str]] = {}
    for a, b, _ in edges:
        callers.setdefault(b, set()).add(a)
    for x in signals:
        if x.caller:
            callers.setdefault(x.service, set()).add(x.caller)
    line_strength = signal_scores(lines)
    measured = {s: w for s, w in signal_scores(telemetry).items() if w >= _MIN_TELEMETRY}
    marked = {x.service for x in signals}
    precise = {x.service for x in lines if x.kind in PRECISE_KINDS and x.strength >= 0.3}
    precise |= set(measured)
    total_votes = sum(origins.values()) or 1
    total_bad = sum(per_service.values()) or 1

    def weight(service: str) -> float:
        """How strongly the signals point at the service: measured figures fully, inferred
        ones half (only where the service is near the errors or precise)."""
        sig = 0.5 * line_strength.get(service, 0.0)
        if sig and not (service in precise or service in failing or service in near):
            sig = 0.0
        return sig + measured.get(service, 0.0)

    def takeover(service: str) -> float:
        """How much of its failing callers' evidence a signalled service takes over: their
        errors are what its silence, slowness or missing step looks like from upstream."""
        sig = line_strength.get(service, 0.0) + measured.get(service, 0.0)
        if not sig or not (service in precise or service in failing or service in near):
            return 0.0
        return max(0.0, 2 * min(1.0, sig) - 1)

    takes = {c: f for c in marked if (f := takeover(c)) > 0}
    lost: dict[str, float] = {}  # per failing caller: the most a callee took over
    for c, f in takes.items():
        for u in callers.get(c, set()) & failing:
            if u != c:
                lost[u] = max(lost.get(u, 0.0), f)

    def score(service: str) -> float:
        own = origins[service] / total_votes + 0.5 * per_service[service] / total_bad
        if line_rules and service not in marked:
            own *= 0.5  # errors the baseline already holds
        own *= 1.0 - lost.get(service, 0.0)
        sig = weight(service)
        if not sig:
            return own
        upstream = callers.get(service, set()) & failing - {service}
        if origins:
            explained = sum(origins[c] for c in upstream) / total_votes
        else:  # no traces voted: their share of the errors instead
            explained = sum(per_service[c] for c in upstream) / total_bad
        return own + sig + explained * takes.get(service, 0.0)

    if not failing:  # no errors: a service that stopped, or whose own figures moved
        stopped = [
            x.service
            for x in lines
            if (x.kind == "silence" and x.strength >= 0.99)
            or (x.kind in PRECISE_KINDS and x.strength >= _STRONG)
        ]
        named = sorted(set(stopped) | set(measured))
        if not named:
            return root, ranked, severity
        top = max(named, key=score)
        order = [top, *sorted((s for s in named if s != top), key=lambda s: (-score(s), s))]
        strongest = max(  # a pod's metric alone (a batch job's CPU) is not an incident
            (x.strength for x in telemetry if x.service in measured and x.kind != "saturation"),
            default=0.0,
        )
        return top, order, "high" if strongest >= _HIGH else "warning"
    origin = {x.service for x in lines if x.kind in ORIGIN_KINDS}
    candidates = failing | {s for s in origin if s in near} | precise
    root = max(sorted(candidates), key=score)
    ranked = sorted(candidates, key=lambda s: (-score(s), s))
    if not line_rules:
        return root, ranked, severity
    # what makes the errors unusual: a signal about them or a service near them; a missing
    # step only when strong (a handful of missed steps happens with ordinary noise too)
    unusual = any(
        (x.kind not in PRECISE_KINDS and x.service in failing | near) or x.strength >= _STRONG
        for x in signals
    )
    if severity == "warning" and not unusual:
        severity = "info"
    return root, ranked, severity
