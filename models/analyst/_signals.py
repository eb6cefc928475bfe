"""Signals: what a line classifier cannot see, computed on every event by the filter stage and
handed to the analysis next to the flagged lines (a service went silent or slow, a template is
new or spiking). Each is small: a kind, the service it is about, a strength and one line of text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["ORIGIN_KINDS", "Signal", "SignalKind", "signal_scores"]

SignalKind = Literal["silence", "drop", "spike", "new_template", "template_spike", "slow_edge"]
#: Kinds that point at a service as the origin of a fault: it stopped talking or got slow.
ORIGIN_KINDS: frozenset[str] = frozenset({"silence", "drop", "slow_edge"})


@dataclass(frozen=True, slots=True)
class Signal:
    kind: SignalKind
    service: str  # the service it is about; for a slow edge, the callee
    text: str  # one line for people and the prompt, e.g. "x: log rate 4/min vs 180/min, -98%"
    strength: float  # 0..1: how far beyond its threshold
    caller: str | None = None  # slow edges: the calling service
    template: str | None = None  # new and spiking templates


def signal_scores(signals: Sequence[Signal]) -> dict[str, float]:
    """Per service, how strongly the signals point at it as an origin (template signals count
    for less: a new line is evidence of change, not of where a fault started)."""
    out: dict[str, float] = {}
    for s in signals:
        weight = 1.0 if s.kind in ORIGIN_KINDS else 0.3
        out[s.service] = out.get(s.service, 0.0) + weight * max(0.0, min(1.0, s.strength))
    return out
