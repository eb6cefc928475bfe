"""Signals about what is missing or slow, per scope, from every event (not only flagged ones).

Counts per service, per (service, template), and the gaps between services in a trace are kept
in tumbling event-time buckets (`bucket_s`). A bucket joins the baseline only once it is
`baseline_delay_s` behind the newest event time, so a fault never teaches the baseline its own
symptoms before its windows are analysed. Baselines are exponentially weighted means and
variances per bucket; buckets in which the scope logged nothing at all are gaps in the data, not
silences, and are skipped.

`signals(start, end)` compares the buckets of a span (an analysis window) with the baseline:

- **silence / drop**: a service that logged far less than its baseline (the fault that logs no
  error: a hung service, a network partition);
- **spike**: far more;
- **new_template**: a line shape this service has not logged before (in the baseline);
- **template_spike**: a known line shape far above its own rate;
- **slow_edge**: the p95 gap from a caller's first line in a trace to the callee's first line
  far above the edge's baseline p95.

State is bounded: at most `max_keys` services, templates and edges each (the least active go),
traces are forgotten after `trace_ttl_s`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from sluice.models.analyst import Signal, SignalKind

__all__ = ["SignalDetector", "SignalSettings"]


class SignalSettings(BaseModel):
    """Thresholds of the signal detector (the worker does not run it yet: issue 10)."""

    bucket_s: float = Field(10.0, gt=0, description="event-time bucket of the counters")
    baseline_delay_s: float = Field(300.0, ge=0, description="a bucket joins the baseline then")
    alpha: float = Field(0.05, gt=0, le=1, description="EWMA weight of one bucket")
    min_history: int = Field(12, ge=1, description="buckets a baseline needs before it judges")
    min_expected: float = Field(30.0, ge=0, description="events a drop or silence must miss")
    drop_ratio: float = Field(0.6, ge=0, le=1, description="observed/expected below: a drop")
    min_z: float = Field(3.0, ge=0, description="and this many standard deviations off")
    spike_ratio: float = Field(4.0, gt=1, description="observed/expected above: a spike")
    min_spike: float = Field(30.0, ge=0, description="events above expected for a spike")
    min_new: int = Field(3, ge=1, description="events of an unseen template for a signal")
    slow_ratio: float = Field(3.0, gt=1, description="p95 gap over baseline p95: a slow edge")
    min_slow_s: float = Field(0.03, ge=0, description="and at least this many seconds more")
    min_gaps: int = Field(5, ge=1, description="gaps an edge needs in a span to be judged")
    max_keys: int = Field(2000, ge=10, description="services, templates, edges kept, each")
    trace_ttl_s: float = Field(120.0, gt=0, description="traces are forgotten after this")
    max_signals: int = Field(12, ge=0, description="signals per span, strongest first")


@dataclass
class _Ewma:
    mean: float = 0.0
    var: float = 0.0
    n: int = 0

    def add(self, x: float, alpha: float) -> None:
        if self.n == 0:
            self.mean = x
        else:
            d = x - self.mean
            self.mean += alpha * d
            self.var = (1 - alpha) * (self.var + alpha * d * d)
        self.n += 1


@dataclass
class _Bucket:
    services: Counter[str] = field(default_factory=Counter)
    templates: Counter[tuple[str, str]] = field(default_factory=Counter)
    gaps: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.services


def _p95(xs: Sequence[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, math.ceil(0.95 * len(s)) - 1)]


class SignalDetector:
    """The signals of one scope. Feed it every event's time, service and (optionally) template
    and trace id, in batches; ask it for the signals of a span."""

    def __init__(self, cfg: SignalSettings | None = None) -> None:
        self.cfg = cfg or SignalSettings()
        self._buckets: dict[int, _Bucket] = {}
        self._rates: dict[str, _Ewma] = {}
        self._template_rates: dict[tuple[str, str], _Ewma] = {}
        self._edge_p95: dict[tuple[str, str], _Ewma] = {}
        self._traces: dict[str, dict[str, float]] = {}  # trace -> service -> first time
        self._trace_seen: dict[str, float] = {}
        self._absorbed = -(2**62)  # the newest bucket in the baseline
        self.watermark = -math.inf

    # -- input -----------------------------------------------------------------------------------

    def observe(
        self,
        ts: Sequence[float],
        services: Sequence[str],
        templates: Sequence[str] | None = None,
        traces: Sequence[str | None] | None = None,
    ) -> None:
        """One batch: event times (epoch seconds; NaN: unknown, counted at the watermark)."""
        size = self.cfg.bucket_s
        now = self.watermark
        for i, t in enumerate(ts):
            if math.isnan(t):
                t = now if now > -math.inf else 0.0
            elif t > now:
                now = t
            b = self._bucket(int(t // size))
            svc = services[i]
            b.services[svc] += 1
            if templates is not None:
                b.templates[(svc, templates[i])] += 1
            if traces is not None and (tid := traces[i]):
                self._trace(b, tid, svc, t)
        self.watermark = now
        self._absorb_old()

    def _bucket(self, n: int) -> _Bucket:
        b = self._buckets.get(n)
        if b is None:
            b = self._buckets[n] = _Bucket()
        return b

    def _trace(self, b: _Bucket, tid: str, svc: str, t: float) -> None:
        seen = self._traces.get(tid)
        if seen is None:
            seen = self._traces[tid] = {}
        self._trace_seen[tid] = t
        if svc in seen:
            return
        if seen:  # the service that appeared last before this one is read as its caller
            caller, since = max(seen.items(), key=lambda kv: kv[1])
            gaps = b.gaps.setdefault((caller, svc), [])
            if len(gaps) < 500:
                gaps.append(max(0.0, t - since))
        seen[svc] = t

    # -- baseline --------------------------------------------------------------------------------

    def _absorb_old(self) -> None:
        cfg = self.cfg
        horizon = int((self.watermark - cfg.baseline_delay_s) // cfg.bucket_s)
        for n in sorted(k for k in self._buckets if k < horizon):
            b = self._buckets.pop(n)
            if not b.empty:
                self._absorb(b)
            self._absorbed = max(self._absorbed, n)
        cutoff = self.watermark - cfg.trace_ttl_s
        if len(self._trace_seen) > 1000:
            for tid in [t for t, at in self._trace_seen.items() if at < cutoff]:
                del self._trace_seen[tid]
                del self._traces[tid]

    def _absorb(self, b: _Bucket) -> None:
        a = self.cfg.alpha
        for svc in self._rates.keys() | b.services.keys():
            self._rates.setdefault(svc, _Ewma()).add(b.services.get(svc, 0), a)
        for key in self._template_rates.keys() | b.templates.keys():
            self._template_rates.setdefault(key, _Ewma()).add(b.templates.get(key, 0), a)
        for edge, gaps in b.gaps.items():
            if len(gaps) >= 3:
                self._edge_p95.setdefault(edge, _Ewma()).add(_p95(gaps), a)
        for table in (self._rates, self._template_rates, self._edge_p95):
            _bound(table, self.cfg.max_keys)  # type: ignore[arg-type]

    # -- output ----------------------------------------------------------------------------------

    def signals(self, start: float, end: float) -> list[Signal]:
        """The signals of the span [start, end) of event time, strongest first."""
        size = self.cfg.bucket_s
        span = [
            b
            for n, b in self._buckets.items()
            if start <= n * size < end and not b.empty and n > self._absorbed
        ]
        if not span:
            return []
        found = [*self._rate_signals(span), *self._template_signals(span), *self._edges(span)]
        found.sort(key=lambda s: (-s.strength, s.kind, s.service))
        return found[: self.cfg.max_signals]

    def _rate_signals(self, span: list[_Bucket]) -> Iterator[Signal]:
        cfg, nb = self.cfg, len(span)
        per_min = 60.0 / cfg.bucket_s
        observed: Counter[str] = Counter()
        for b in span:
            observed.update(b.services)
        for svc, base in self._rates.items():
            if base.n < cfg.min_history:
                continue
            exp, obs = base.mean * nb, observed.get(svc, 0)
            # counts vary as Poisson at least, and as much as this service's buckets have varied
            z = (obs - exp) / math.sqrt(max(1.0, exp + base.var * nb))
            if abs(z) < cfg.min_z:
                continue
            rate = f"log rate {obs / nb * per_min:.0f}/min vs {base.mean * per_min:.0f}/min"
            change = f"{(obs - exp) / exp:+.0%}" if exp else "new"
            kind: SignalKind
            if exp >= cfg.min_expected and obs <= cfg.drop_ratio * exp:
                kind = "silence" if obs == 0 else "drop"
                strength = 1.0 - obs / exp
                yield Signal(kind, svc, f"{svc}: {rate}, {change}", round(strength, 3))
            elif obs >= cfg.spike_ratio * exp and obs - exp >= cfg.min_spike:
                strength = min(1.0, (obs / max(exp, 1.0)) / (4 * cfg.spike_ratio))
                yield Signal("spike", svc, f"{svc}: {rate}, {change}", round(strength, 3))

    def _template_signals(self, span: list[_Bucket]) -> Iterator[Signal]:
        cfg, nb = self.cfg, len(span)
        observed: Counter[tuple[str, str]] = Counter()
        for b in span:
            observed.update(b.templates)
        for (svc, template), obs in observed.most_common():
            svc_base = self._rates.get(svc)
            if svc_base is None or svc_base.n < cfg.min_history:
                continue  # a service without history: everything it logs is new
            base = self._template_rates.get((svc, template))
            if base is None or base.mean == 0.0:
                if obs >= cfg.min_new:
                    strength = min(1.0, obs / (10 * cfg.min_new))
                    yield Signal("new_template", svc, f"{svc}: new line x{obs}: {template[:120]}",
                                 round(strength, 3), template=template)  # fmt: skip
                continue
            exp = base.mean * nb
            if obs >= cfg.spike_ratio * exp and obs - exp >= cfg.min_spike:
                strength = min(1.0, (obs / max(exp, 1.0)) / (4 * cfg.spike_ratio))
                yield Signal("template_spike", svc,
                             f"{svc}: x{obs} vs {exp:.0f} expected: {template[:120]}",
                             round(strength, 3), template=template)  # fmt: skip

    def _edges(self, span: list[_Bucket]) -> Iterator[Signal]:
        cfg = self.cfg
        gaps: dict[tuple[str, str], list[float]] = {}
        for b in span:
            for edge, xs in b.gaps.items():
                gaps.setdefault(edge, []).extend(xs)
        for (caller, callee), xs in gaps.items():
            base = self._edge_p95.get((caller, callee))
            if base is None or base.n < cfg.min_history or len(xs) < cfg.min_gaps:
                continue
            p95 = _p95(xs)
            if p95 >= cfg.slow_ratio * base.mean and p95 - base.mean >= cfg.min_slow_s:
                strength = min(1.0, p95 / max(base.mean, 1e-3) / (4 * cfg.slow_ratio))
                text = (f"{caller} -> {callee}: p95 gap {p95 * 1000:.0f} ms vs baseline "
                        f"{base.mean * 1000:.0f} ms")  # fmt: skip
                yield Signal("slow_edge", callee, text, round(strength, 3), caller=caller)


def _bound(table: dict[object, _Ewma], keep: int) -> None:
    """Keep the `keep` most active keys (by mean): the idle ones go."""
    if len(table) > keep:
        for k in sorted(table, key=lambda k: table[k].mean)[: len(table) - keep]:
            del table[k]
