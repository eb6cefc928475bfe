"""Signals: what a line classifier cannot see, computed on every event by the filter stage and
handed to the analysis next to the flagged lines (a service went silent or slow, a template is
new or spiking). Each is small: a kind, the service it is about, a strength and one line of text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ORIGIN_KINDS",
    "PRECISE_KINDS",
    "TELEMETRY_KINDS",
    "Signal",
    "SignalKind",
    "signal_scores",
]

SignalKind = Literal[
    "silence",
    "drop",
    "spike",
    "new_template",
    "template_spike",
    "template_drop",
    "missing_step",
    "slow_edge",
    "self_time",
    "edge_latency",
    "edge_errors",
    "saturation",
]
#: Kinds that point at a service as the origin of a fault: it stopped talking, got slow, or a
#: line it logs on every request stopped (the request fails between two of its log lines).
ORIGIN_KINDS: frozenset[str] = frozenset(
    {"silence", "drop", "template_drop", "missing_step", "slow_edge", "self_time",
     "edge_latency", "edge_errors", "saturation"}
)  # fmt: skip
#: Kinds measured on spans and metric points (`stream.signals.telemetry`), each about the one
#: service whose own figures moved: its self time, the time outside it on calls into it, its
#: failed calls, its saturation. Evidence about that service whether or not anything logs.
TELEMETRY_KINDS: frozenset[str] = frozenset({"self_time", "edge_latency", "edge_errors",
                                             "saturation"})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Signal:
    kind: SignalKind
    service: str  # the service it is about; for a slow edge, the callee
    text: str  # one line for people and the prompt, e.g. "x: log rate 4/min vs 180/min, -98%"
    strength: float  # 0..1: how far beyond its threshold
    caller: str | None = None  # slow edges: the calling service
    template: str | None = None  # new and spiking templates


#: Kinds precise enough to name an origin on their own, whether or not it is near the errors:
#: a line that follows another in a trace stopped following (the request failed in between).
PRECISE_KINDS: frozenset[str] = frozenset({"missing_step"})
#: How much each kind says about where a fault started (a new line is evidence of change, not of
#: where it began; a missing step says which service stopped doing its part).
_WEIGHT = {"missing_step": 1.5, "silence": 1.0, "drop": 1.0, "slow_edge": 1.0,
           "template_drop": 1.0, "self_time": 1.0, "edge_latency": 1.0, "edge_errors": 1.0,
           "saturation": 0.5}  # fmt: skip


def signal_scores(signals: Sequence[Signal]) -> dict[str, float]:
    """Per service, how strongly the signals point at it as an origin: the strongest signal of
    each kind, weighted by kind, summed (at most 2)."""
    best: dict[tuple[str, str], float] = {}
    for s in signals:
        w = _WEIGHT.get(s.kind, 0.3) * max(0.0, min(1.0, s.strength))
        best[(s.service, s.kind)] = max(best.get((s.service, s.kind), 0.0), w)
    out: dict[str, float] = {}
    for (service, _kind), w in best.items():
        out[service] = min(2.0, out.get(service, 0.0) + w)
    return out
