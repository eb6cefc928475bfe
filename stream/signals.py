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
from dataclasses import astuple, dataclass, field

import orjson

from sluice.models.analyst import Signal, SignalKind
from sluice.stream._settings import SignalSettings
from sluice.stream.records import SignalCounts

__all__ = ["SignalDetector", "SignalSettings", "counts_of"]

#: Gaps kept per edge and bucket (a p95 needs no more).
_MAX_GAPS = 500
#: Per batch: gaps per edge and bucket, and rows of each kind (a counts record stays < 350 kB).
_MAX_BATCH_GAPS = 50
_MAX_BATCH_ROWS = 1000
#: Service names are counted by their first characters (a name is untrusted input).
_MAX_NAME = 100


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
        # per-bucket rates averaged over blocks of `block_buckets`: how much a service's rate
        # moves from one minute to the next (load mix changes), which bucket noise understates
        self._block_rates: dict[str, _Ewma] = {}
        self._block: Counter[str] = Counter()
        self._block_n = 0
        self._template_rates: dict[tuple[str, str], _Ewma] = {}
        self._edge_p95: dict[tuple[str, str], _Ewma] = {}
        self._hops = _TraceHops()
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
        hop = self._hops.see(tid, svc, t)
        if hop is not None:
            gaps = b.gaps.setdefault(hop[0], [])
            if len(gaps) < _MAX_GAPS:
                gaps.append(hop[1])

    def add_counts(self, rec: SignalCounts) -> None:
        """Counts the filter stage made of a batch (see `counts_of`); buckets in the baseline
        already are too late to count."""
        if rec.bucket_s != self.cfg.bucket_s:
            return  # counted with other settings: not comparable
        for n, svc, count in rec.services:
            if n > self._absorbed:
                self._bucket(n).services[svc] += count
                self.watermark = max(self.watermark, (n + 1) * rec.bucket_s)
        for n, caller, callee, gap in rec.gaps:
            if n > self._absorbed:
                gaps = self._bucket(n).gaps.setdefault((caller, callee), [])
                if len(gaps) < _MAX_GAPS:
                    gaps.append(gap)
        self._absorb_old()

    # -- state -----------------------------------------------------------------------------------

    def dump(self) -> bytes:
        """The detector's state (baselines and the buckets not in them yet), for a state store."""
        return orjson.dumps(
            {
                "absorbed": self._absorbed,
                "watermark": self.watermark if self.watermark > -math.inf else None,
                "rates": {k: astuple(v) for k, v in self._rates.items()},
                "block_rates": {k: astuple(v) for k, v in self._block_rates.items()},
                "block": [dict(self._block), self._block_n],
                "templates": [[s, t, *astuple(v)] for (s, t), v in self._template_rates.items()],
                "edges": [[a, b, *astuple(v)] for (a, b), v in self._edge_p95.items()],
                "buckets": [
                    [n, dict(b.services), [[s, t, c] for (s, t), c in b.templates.items()],
                     [[a, c, g] for (a, c), g in b.gaps.items()]]
                    for n, b in sorted(self._buckets.items())
                ],
            }
        )  # fmt: skip

    @classmethod
    def load(cls, raw: bytes, cfg: SignalSettings | None = None) -> SignalDetector:
        d = cls(cfg)
        x = orjson.loads(raw)
        d._absorbed = int(x["absorbed"])
        d.watermark = float(x["watermark"]) if x["watermark"] is not None else -math.inf
        d._rates = {k: _Ewma(*v) for k, v in x["rates"].items()}
        d._block_rates = {k: _Ewma(*v) for k, v in x["block_rates"].items()}
        d._block, d._block_n = Counter(x["block"][0]), int(x["block"][1])
        d._template_rates = {(s, t): _Ewma(*v) for s, t, *v in x["templates"]}
        d._edge_p95 = {(a, b): _Ewma(*v) for a, b, *v in x["edges"]}
        for n, services, templates, gaps in x["buckets"]:
            b = d._bucket(int(n))
            b.services.update(services)
            b.templates.update({(s, t): c for s, t, c in templates})
            b.gaps.update({(a, c): list(g) for a, c, g in gaps})
        return d

    # -- baseline --------------------------------------------------------------------------------

    def _absorb_old(self) -> None:
        cfg = self.cfg
        horizon = int((self.watermark - cfg.baseline_delay_s) // cfg.bucket_s)
        for n in sorted(k for k in self._buckets if k < horizon):
            b = self._buckets.pop(n)
            if not b.empty:
                self._absorb(b)
            self._absorbed = max(self._absorbed, n)
        self._hops.forget_before(self.watermark - cfg.trace_ttl_s)

    def _absorb(self, b: _Bucket) -> None:
        a = self.cfg.alpha
        for svc in self._rates.keys() | b.services.keys():
            self._rates.setdefault(svc, _Ewma()).add(b.services.get(svc, 0), a)
        for key in self._template_rates.keys() | b.templates.keys():
            self._template_rates.setdefault(key, _Ewma()).add(b.templates.get(key, 0), a)
        self._block.update(b.services)
        self._block_n += 1
        if self._block_n >= self.cfg.block_buckets:
            for svc in self._block_rates.keys() | self._block.keys():
                rate = self._block.get(svc, 0) / self._block_n
                self._block_rates.setdefault(svc, _Ewma()).add(rate, self.cfg.block_alpha)
            self._block, self._block_n = Counter(), 0
        for edge, gaps in b.gaps.items():
            if len(gaps) >= 3:
                self._edge_p95.setdefault(edge, _Ewma()).add(_p95(gaps), a)
        for table in (self._rates, self._block_rates, self._template_rates, self._edge_p95):
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
            block = self._block_rates.get(svc)
            if block is None or block.n < cfg.min_blocks:
                continue
            # the span's rate against the usual minute-to-minute spread (plus Poisson noise)
            z = (obs / nb - base.mean) / math.sqrt(max(1e-6, block.var + base.mean / nb))
            if abs(z) < cfg.min_z:
                continue
            rate = f"log rate {obs / nb * per_min:.0f}/min vs {base.mean * per_min:.0f}/min"
            change = f"{(obs - exp) / exp:+.0%}" if exp else "new"
            kind: SignalKind
            if exp >= cfg.min_expected and obs <= cfg.drop_ratio * exp:
                kind = "silence" if obs == 0 else "drop"
                strength = 1.0 - obs / exp
                # who usually calls it (the baseline's busiest edge into it): its callers'
                # errors are what this silence looks like from upstream
                callers = sorted(
                    (e for e in self._edge_p95 if e[1] == svc),
                    key=lambda e: (-self._edge_p95[e].n, e),
                )
                yield Signal(kind, svc, f"{svc}: {rate}, {change}", round(strength, 3),
                             caller=callers[0][0] if callers else None)  # fmt: skip
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
            z = (p95 - base.mean) / math.sqrt(max(1e-6, base.var))
            if (p95 >= cfg.slow_ratio * base.mean and p95 - base.mean >= cfg.min_slow_s
                    and z >= cfg.min_z):  # fmt: skip
                strength = min(1.0, p95 / max(base.mean, 1e-3) / (4 * cfg.slow_ratio))
                text = (f"{caller} -> {callee}: p95 gap {p95 * 1000:.0f} ms vs baseline "
                        f"{base.mean * 1000:.0f} ms")  # fmt: skip
                yield Signal("slow_edge", callee, text, round(strength, 3), caller=caller)


class _TraceHops:
    """Caller -> callee hops from the order in which services first log in each trace (logs
    carry trace ids, not parent spans): a service's caller is the one that logged last before
    it appeared. Traces are forgotten by `forget_before` (bounded)."""

    def __init__(self) -> None:
        self._traces: dict[str, dict[str, float]] = {}  # trace -> service -> first time
        self._last: dict[str, float] = {}

    def see(self, tid: str, svc: str, t: float) -> tuple[tuple[str, str], float] | None:
        """The hop (caller, callee) and its gap when `svc` is new in the trace, else None."""
        seen = self._traces.get(tid)
        if seen is None:
            seen = self._traces[tid] = {}
        self._last[tid] = t
        if svc in seen:
            return None
        hop = None
        if seen:
            caller, since = max(seen.items(), key=lambda kv: kv[1])
            hop = (caller, svc), max(0.0, t - since)
        seen[svc] = t
        return hop

    def forget_before(self, cutoff: float) -> None:
        if len(self._last) > 1000:
            for tid in [t for t, at in self._last.items() if at < cutoff]:
                del self._last[tid]
                del self._traces[tid]


def counts_of(
    scope: str,
    ts: Sequence[float],
    services: Sequence[str],
    traces: Sequence[str | None],
    bucket_s: float,
) -> SignalCounts:
    """One batch's events of one scope as the filter stage sends them to the analysis stage:
    events per (bucket, service) and the hops of the traces within the batch. Events without a
    time count in the batch's newest bucket."""
    known = [t for t in ts if not math.isnan(t)]
    latest = max(known) if known else 0.0
    per: Counter[tuple[int, str]] = Counter()
    gaps: list[tuple[int, str, str, float]] = []
    per_edge: Counter[tuple[int, str, str]] = Counter()
    hops = _TraceHops()
    for t, name, tid in zip(ts, services, traces, strict=True):
        svc = name[:_MAX_NAME]
        at = latest if math.isnan(t) else t
        n = int(at // bucket_s)
        per[(n, svc)] += 1
        if tid and (hop := hops.see(tid, svc, at)) is not None:
            key = (n, *hop[0])
            if per_edge[key] < _MAX_BATCH_GAPS and len(gaps) < _MAX_BATCH_ROWS:
                per_edge[key] += 1
                gaps.append((n, hop[0][0], hop[0][1], round(hop[1], 6)))
    # bounded whatever the input: a record of counts stays far below Kafka's record limit even
    # when every event names a service of its own (the busiest keys are kept)
    rows = per.most_common(_MAX_BATCH_ROWS) if len(per) > _MAX_BATCH_ROWS else per.items()
    return SignalCounts(
        scope=scope,
        bucket_s=bucket_s,
        services=[(n, svc, c) for (n, svc), c in sorted(rows)],
        gaps=gaps,
    )


def _bound(table: dict[object, _Ewma], keep: int) -> None:
    """Keep the `keep` most active keys (by mean): the idle ones go."""
    if len(table) > keep:
        for k in sorted(table, key=lambda k: table[k].mean)[: len(table) - keep]:
            del table[k]
