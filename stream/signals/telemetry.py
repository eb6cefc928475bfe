"""The analysis stage's side of spans and metrics: the rows the filter stage folded
(`signals.spans`) gathered per bucket, blocks of buckets learned as baselines, and a span of
event time judged against them. Held by the scope's `SignalDetector` and stored with it.

A bucket joins the baseline when the detector's lines do (`baseline_delay_s` behind the newest
event time); `block_buckets` of them make one block, whose figures per key (a service's self time,
an edge's time outside its callee, its failed share, a metric's mean) update an exponentially
weighted mean and variance, a deviation counting for at most two standard deviations once the
baseline is warm (a fault teaches it little of its own symptoms).

Signals (strength `1 - exp(-z / (2 * min_z))`: 0.39 at the threshold, 0.9 at about 4.6 times it):

- **self_time**: a service's spans' own time far above its usual (CPU contention, a slow disk,
  a lock): its own anomaly, whatever its callees do;
- **edge_latency** (about the callee, `caller` set): the time outside the callee on calls into
  it far above usual: the network to it or the queue in front of it. When *every* edge out of a
  caller got slower (at least two, their median beyond the threshold), that is the caller's own
  problem (a CPU-starved caller times its calls late): the caller gets a `self_time` signal for it
  and each edge keeps only what exceeds that median;
- **edge_errors**: the failed share of calls into a callee far above usual;
- **saturation**: a metric of the service's (CPU, memory, throttling, restarts, errors, or a
  success rate falling) far beyond its usual, by at least `min_saturation` of it (a standard
  deviation taken as at least a quarter of its usual level: a point a minute is noisy).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from sluice.models.analyst import Signal
from sluice.stream.records import SignalCounts
from sluice.stream.settings import SignalSettings
from sluice.stream.signals.baselines import _CLIP, _Ewma

__all__ = ["Telemetry"]

#: Metrics that measure strain (the rest, traffic and bytes, move with load and say less).
#: Latencies are left to the spans, which say which edge; a pod's figures say whose resources.
_STRAIN = re.compile(
    r"cpu|memory|mem_|\bmem\b|throttl|restart|oom|saturat|utiliz|success|error|fail",
    re.IGNORECASE,
)
_FALLING = re.compile(r"success|availab", re.IGNORECASE)  # bad when they fall
_MIN_SD = 0.1  # ln units (10%): a tight baseline is not a signal per jitter
_MIN_BLOCK_N = 3  # spans (points) a key needs in a block to teach its baseline


@dataclass
class _TBucket:
    selves: dict[str, list[float]] = field(default_factory=dict)  # n, sum ln, errors
    calls: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # n, sum ln client,
    # n outside, sum ln outside, errors
    metrics: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # points, sum

    @property
    def empty(self) -> bool:
        return not (self.selves or self.calls or self.metrics)

    def merge(self, other: _TBucket) -> None:
        tables: tuple[tuple[dict[Any, list[float]], dict[Any, list[float]]], ...] = (
            (self.selves, other.selves),
            (self.calls, other.calls),
            (self.metrics, other.metrics),
        )
        for mine, theirs in tables:
            for k, row in theirs.items():
                _add(mine, k, tuple(row))

    def rows(self, at: Any) -> list[object]:
        return [
            [[at(s), *r] for s, r in self.selves.items()],
            [[at(a), at(b), *r] for (a, b), r in self.calls.items()],
            [[at(s), at(m), *r] for (s, m), r in self.metrics.items()],
        ]

    @classmethod
    def of_rows(cls, rows: list[Any], text: list[str]) -> _TBucket:
        selves, calls, metrics = rows
        return cls(
            {text[s]: list(r) for s, *r in selves},
            {(text[a], text[b]): list(r) for a, b, *r in calls},
            {(text[s], text[m]): list(r) for s, m, *r in metrics},
        )


def _strength(z: float, min_z: float) -> float:
    return round(1.0 - math.exp(-z / (2 * min_z)), 3)


def _ms(ln_us: float) -> str:
    ms = math.exp(ln_us) / 1000
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


class Telemetry:
    """Span and metric baselines of one scope, and the signals of a span of event time."""

    def __init__(self, cfg: SignalSettings) -> None:
        self.cfg = cfg
        self.buckets: dict[int, _TBucket] = {}
        self.block = _TBucket()
        self.block_n = 0
        self.horizon = -(2**62)  # buckets before it are in the baseline: late rows are dropped
        self.selves: dict[str, _Ewma] = {}  # mean ln self time per block
        self.outside: dict[tuple[str, str], _Ewma] = {}  # mean ln time outside the callee
        self.failed: dict[tuple[str, str], _Ewma] = {}  # failed share of calls
        self.metrics: dict[tuple[str, str], _Ewma] = {}  # mean value

    # -- input -----------------------------------------------------------------------------------

    def add(self, rec: SignalCounts, live: int) -> int | None:
        """A record's span and metric rows (buckets after `live` only); the newest bucket seen."""
        names, metric_names = rec.names, rec.metric_names
        live = max(live, self.horizon - 1)
        newest: int | None = None

        def bucket(n: int) -> _TBucket:
            nonlocal newest
            newest = n if newest is None else max(newest, n)
            b = self.buckets.get(n)
            if b is None:
                b = self.buckets[n] = _TBucket()
            return b

        for n, s, count, ln, errors in rec.spans:
            if n > live:
                _add(bucket(n).selves, names[s], (count, ln, errors))
        for n, a, c, calls, ln_client, timed, ln_out, errors in rec.calls:
            if n > live:
                _add(
                    bucket(n).calls, (names[a], names[c]), (calls, ln_client, timed, ln_out, errors)
                )
        for n, s, m, points, total in rec.metrics:
            if n > live and m < len(metric_names):
                _add(bucket(n).metrics, (names[s], metric_names[m]), (points, total))
        return newest

    def absorb_before(self, horizon: int) -> None:
        """Buckets before `horizon` into the baselines (a block at a time)."""
        self.horizon = max(self.horizon, horizon)
        for n in sorted(k for k in self.buckets if k < horizon):
            b = self.buckets.pop(n)
            if b.empty:
                continue
            self.block.merge(b)
            self.block_n += 1
            if self.block_n >= self.cfg.block_buckets:
                self._learn(self.block)
                self.block, self.block_n = _TBucket(), 0

    def _learn(self, b: _TBucket) -> None:
        cfg = self.cfg
        a, warm = cfg.telemetry_alpha, cfg.min_blocks
        for svc, (n, ln, _err) in b.selves.items():
            if n >= _MIN_BLOCK_N:
                self.selves.setdefault(svc, _Ewma()).add(ln / n, a, _CLIP, warm)
        for edge, (n, _c, timed, ln_out, err) in b.calls.items():
            if timed >= _MIN_BLOCK_N:
                self.outside.setdefault(edge, _Ewma()).add(ln_out / timed, a, _CLIP, warm)
            if n >= _MIN_BLOCK_N:
                self.failed.setdefault(edge, _Ewma()).add(err / n, a, _CLIP, warm)
        for key, (n, total) in b.metrics.items():
            if n and _STRAIN.search(key[1]):
                self.metrics.setdefault(key, _Ewma()).add(total / n, a, _CLIP, warm)
        keep = cfg.max_keys
        baselines: tuple[dict[Any, _Ewma], ...] = (
            self.selves,
            self.outside,
            self.failed,
            self.metrics,
        )
        for table in baselines:
            if len(table) > keep:  # the least learnt go
                for k in sorted(table, key=lambda k: table[k].n)[: len(table) - keep]:
                    del table[k]

    # -- output ----------------------------------------------------------------------------------

    def span(self, start_bucket: int, end_bucket: int) -> _TBucket:
        """The live buckets in [start_bucket, end_bucket), pooled."""
        out = _TBucket()
        for n, b in self.buckets.items():
            if start_bucket <= n < end_bucket:
                out.merge(b)
        return out

    def signals(self, start_bucket: int, end_bucket: int) -> list[Signal]:
        span = self.span(start_bucket, end_bucket)
        if span.empty:
            return []
        return [*self._spans(span), *self._errors(span), *self._saturation(span)]

    def _z(self, base: _Ewma | None, x: float) -> float | None:
        if base is None or base.n < self.cfg.min_blocks:
            return None
        return (x - base.mean) / max(math.sqrt(base.var), _MIN_SD)

    def _spans(self, span: _TBucket) -> Iterator[Signal]:
        cfg = self.cfg
        min_z, enough = cfg.telemetry_min_z, cfg.min_spans
        for svc, (n, ln, _err) in sorted(span.selves.items()):
            z = self._z(self.selves.get(svc), ln / n) if n >= enough else None
            if z is not None and z >= min_z:
                usual = self.selves[svc].mean
                yield Signal(
                    "self_time",
                    svc,
                    f"{svc}: self time {_ms(ln / n)} vs {_ms(usual)} usually "
                    f"({n} spans, z {z:.1f})",
                    _strength(z, min_z),
                )
        judged: dict[tuple[str, str], float] = {}
        for edge, (_n, _c, timed, ln_out, _err) in span.calls.items():
            z = self._z(self.outside.get(edge), ln_out / timed) if timed >= enough else None
            if z is not None:
                judged[edge] = z
        per_caller: dict[str, list[float]] = {}
        for (caller, _callee), z in judged.items():
            per_caller.setdefault(caller, []).append(z)
        wide = {c: median(zs) for c, zs in per_caller.items() if len(zs) >= 2}
        for caller, z in sorted(wide.items()):
            if z >= min_z:
                n_edges = len(per_caller[caller])
                yield Signal(
                    "self_time",
                    caller,
                    f"{caller}: every call it makes is slower outside its callees "
                    f"(median z {z:.1f} over {n_edges} edges): its own CPU or network",
                    _strength(z, min_z),
                )
        for (caller, callee), z in sorted(judged.items()):
            own = z - max(0.0, wide.get(caller, 0.0)) if wide.get(caller, 0.0) >= min_z else z
            if own < min_z:
                continue
            _n, _c, timed, ln_out, _err = span.calls[(caller, callee)]
            usual = self.outside[(caller, callee)].mean
            yield Signal(
                "edge_latency",
                callee,
                f"{caller} -> {callee}: time outside {callee} {_ms(ln_out / timed)} vs "
                f"{_ms(usual)} usually (network, queueing; {timed} calls, z {z:.1f})",
                _strength(own, min_z),
                caller=caller,
            )

    def _errors(self, span: _TBucket) -> Iterator[Signal]:
        cfg = self.cfg
        for (caller, callee), (n, _c, _t, _o, err) in sorted(span.calls.items()):
            if n < cfg.min_spans or err < 3:
                continue
            base = self.failed.get((caller, callee))
            p = base.mean if base is not None and base.n >= cfg.min_blocks else 0.0
            share = err / n
            noise = math.sqrt((base.var if base is not None else 0.0) + max(p, 0.01) / n)
            z = (share - p) / noise
            if z >= cfg.telemetry_min_z and share - p >= 0.05:
                yield Signal(
                    "edge_errors",
                    callee,
                    f"{caller} -> {callee}: {err} of {n} calls failed ({share:.0%}) vs "
                    f"{p:.0%} usually",
                    _strength(z, cfg.telemetry_min_z),
                    caller=caller,
                )

    def _saturation(self, span: _TBucket) -> Iterator[Signal]:
        cfg = self.cfg
        for (svc, metric), (n, total) in sorted(span.metrics.items()):
            base = self.metrics.get((svc, metric))
            if not n or base is None or base.n < cfg.min_blocks:
                continue
            x = total / n
            sign = -1.0 if _FALLING.search(metric) else 1.0
            # a point a minute, clipped into its baseline: the spread is understated, so a
            # quarter of the usual level is the least a standard deviation is taken to be
            scale = max(math.sqrt(base.var), 0.25 * abs(base.mean), 1e-9)
            z = sign * (x - base.mean) / scale
            change = sign * (x - base.mean) / max(abs(base.mean), 1e-9)
            if z >= cfg.telemetry_min_z and change >= cfg.min_saturation:
                yield Signal(
                    "saturation",
                    svc,
                    f"{svc}: {metric} {x:.4g} vs {base.mean:.4g} usually "
                    f"({change:+.0%}, z {z:.1f})",
                    _strength(z, cfg.telemetry_min_z),
                )

    # -- state (`signals.codec`) -----------------------------------------------------------------

    def dump(self, at: Any) -> dict[str, object]:
        def ewmas(table: dict[Any, _Ewma]) -> list[list[object]]:
            return [
                [*(at(k) for k in (key if isinstance(key, tuple) else (key,))), *v.row()]
                for key, v in table.items()
            ]

        return {
            "horizon": self.horizon,
            "buckets": [[n, b.rows(at)] for n, b in sorted(self.buckets.items())],
            "block": [self.block_n, self.block.rows(at)],
            "selves": ewmas(self.selves),
            "outside": ewmas(self.outside),
            "failed": ewmas(self.failed),
            "metrics": ewmas(self.metrics),
        }

    @classmethod
    def load(cls, x: dict[str, Any], text: list[str], cfg: SignalSettings) -> Telemetry:
        t = cls(cfg)
        t.horizon = int(x["horizon"])
        t.buckets = {int(n): _TBucket.of_rows(rows, text) for n, rows in x["buckets"]}
        t.block_n, rows = x["block"]
        t.block = _TBucket.of_rows(rows, text)
        t.selves = {text[s]: _Ewma(*v) for s, *v in x["selves"]}
        for name in ("outside", "failed", "metrics"):
            setattr(t, name, {(text[a], text[b]): _Ewma(*v) for a, b, *v in x[name]})
        return t


def _add(table: dict[Any, list[float]], key: Any, row: tuple[float, ...]) -> None:
    had = table.get(key)
    if had is None:
        table[key] = list(row)
    else:
        for i, x in enumerate(row):
            had[i] += x
