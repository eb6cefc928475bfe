"""Signals about what is missing or slow, per scope, from every event (not only flagged ones).

Two halves, as the worker splits them:

- `SignalCounter` (filter stage) counts each batch into a small `SignalCounts` record: events
  per event-time bucket (`bucket_s`) and service, and per line shape (template); the gaps
  between services in a trace; and the *steps* of traces, which line follows which. It keeps the
  traces it has seen (bounded), so a trace that spans batches is still followed.
- `SignalDetector` (analysis stage, its state in the scope's table) folds the records into
  baselines and compares a span with them.

A bucket joins the baseline only once it is `baseline_delay_s` behind the newest event time, so
a fault never teaches the baseline its own symptoms before its windows are analysed. Baselines
are exponentially weighted means and variances; buckets in which the scope logged nothing at all
are gaps in the data, not silences, and are skipped.

`signals(start, end)` compares the buckets of a span (an analysis window) with the baseline:

- **silence / drop**: a service that logged far less than its baseline (the fault that logs no
  error: a hung service, a network partition);
- **spike**: far more;
- **missing_step**: in traces, a line that usually follows another no longer does: requests
  now fail between two log lines of a service (an exception, an early return) or never reach
  it, though nothing it logs looks wrong. The baseline of a step does not learn from buckets in
  which it was missing (for at most `max_held_buckets`), so a fault that comes back is seen
  again;
- **template_drop**: without traces, a line's share of the scope's events fell far below its
  usual share (the load varies far more than the mix);
- **new_template**: a line shape this service has not logged before (in the baseline);
- **template_spike**: a known line shape far above its own rate;
- **slow_edge**: the p95 gap from a caller's last line before the call to the callee's first
  line of the trace, far above the edge's baseline p95; or a service's own time between two of
  its lines in a row (its work, stretched by CPU contention or a slow disk).

State is bounded: at most `max_keys` services, templates, steps and edges each (the least active
go); traces are forgotten after `trace_ttl_s` or beyond `max_traces`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence

from sluice.models.analyst import EdgeLatency, Signal, SignalKind, is_alarming
from sluice.stream.records import SignalCounts
from sluice.stream.settings import SignalSettings
from sluice.stream.signals.baselines import (
    _CLIP,
    _MAX_GAPS,
    _RECENT,
    _binomial_surprise,
    _bound,
    _bound_recent,
    _Bucket,
    _Decaying,
    _Ewma,
    _p95,
    _Step,
)
from sluice.stream.signals.counter import Key, SignalCounter
from sluice.stream.signals.telemetry import Telemetry

__all__ = ["ANY_LINE", "SignalDetector", "SignalSettings"]

#: Successors kept per line (the usual next lines; a step matters when it follows most times).
_MAX_NEXT = 8

#: The template of a step into another service, whatever line it logs first.
ANY_LINE = "*"


_BOILERPLATE = re.compile(r"^(<ts>\s*)+|\b(trace|span)_?id[:=]?\s*<num>\s*", re.IGNORECASE)


def _brief(template: str, n: int) -> str:
    """A line shape for people and the prompt: no leading time, no trace and span ids."""
    return _BOILERPLATE.sub("", template)[:n]


class SignalDetector:
    """The signals of one scope. Feed it the filter stage's `SignalCounts` (or, in one process,
    events through `observe`); ask it for the signals of a span."""

    def __init__(self, cfg: SignalSettings | None = None) -> None:
        self.cfg = cfg or SignalSettings()
        self._buckets: dict[int, _Bucket] = {}
        self._rates: dict[str, _Ewma] = {}
        # per-bucket rates averaged over blocks of `block_buckets`: how much a service's rate
        # moves from one minute to the next (load mix changes), which bucket noise understates
        self._block_rates: dict[str, _Ewma] = {}
        self._block: Counter[str] = Counter()
        self._block_n = 0
        # per template: its share of the scope's events per block, and how much it moves
        self._block_templates: Counter[Key] = Counter()
        self._template_shares: dict[Key, _Ewma] = {}
        self._block_gaps: dict[tuple[str, str], list[float]] = {}
        self._template_rates: dict[Key, _Decaying] = {}
        self._absorbed_n = 0  # buckets absorbed (the clock of the decaying means)
        # per line: traced occurrences per bucket; per (line, next line): the share of them
        # that the next line followed
        self._traced: dict[Key, _Decaying] = {}
        self._next: dict[Key, dict[Key, _Step]] = {}
        self._edge_p95: dict[tuple[str, str], _Ewma] = {}
        self._counter: SignalCounter | None = None  # for `observe`
        self._absorbed = -(2**62)  # the newest bucket in the baseline
        self.watermark = -math.inf
        self.telemetry = Telemetry(self.cfg)  # spans and metric points (`signals.telemetry`)

    # -- input -----------------------------------------------------------------------------------

    def observe(
        self,
        ts: Sequence[float],
        services: Sequence[str],
        templates: Sequence[str] | None = None,
        traces: Sequence[str | None] | None = None,
    ) -> None:
        """One batch of events, counted as the filter stage counts them (event times in epoch
        seconds; NaN: unknown, counted at the batch's newest time)."""
        if self._counter is None:
            self._counter = SignalCounter(self.cfg.bucket_s, self.cfg.trace_ttl_s)
        tr = traces if traces is not None else [None] * len(ts)
        self.add_counts(self._counter.count("", ts, services, tr, templates))

    def _bucket(self, n: int) -> _Bucket:
        b = self._buckets.get(n)
        if b is None:
            b = self._buckets[n] = _Bucket()
        return b

    def add_counts(self, rec: SignalCounts, hold: float | None = None) -> None:
        """Counts the filter stage made of a batch; buckets in the baseline already are too late
        to count. Buckets from `hold` (epoch seconds: the start of a window still open) stay out
        of the baseline whatever the watermark says: that window's signals need them."""
        if rec.bucket_s != self.cfg.bucket_s:
            return  # counted with other settings: not comparable
        names, tpl = rec.names, rec.templates
        live = self._absorbed
        for n, s, count in rec.services:
            if n > live:
                self._bucket(n).services[names[s]] += count
                self.watermark = max(self.watermark, (n + 1) * rec.bucket_s)
        for n, a, c, gap in rec.gaps:
            if n > live:
                gaps = self._bucket(n).gaps.setdefault((names[a], names[c]), [])
                if len(gaps) < _MAX_GAPS:
                    gaps.append(gap)
        for n, s, t, count, traced in rec.lines:
            if n > live:
                b = self._bucket(n)
                key = (names[s], tpl[t])
                b.templates[key] += count
                if traced:
                    b.traced[key] += traced
        for n, s, t, s2, t2, times in rec.steps:
            if n > live:
                nxt = self._bucket(n).steps.setdefault((names[s], tpl[t]), Counter())
                nxt[(names[s2], tpl[t2])] += times
                if s2 != s:  # and the call into the next service, whatever line it logs first
                    nxt[(names[s2], ANY_LINE)] += times
        if rec.spans or rec.calls or rec.metrics:
            newest = self.telemetry.add(rec, live)
            if newest is not None:
                self.watermark = max(self.watermark, (newest + 1) * rec.bucket_s)
        self._absorb_old(hold)

    # -- state (`signals.codec`) -----------------------------------------------------------------

    def dump(self) -> bytes:
        """The detector's state, versioned, for a state store (`signals.codec`)."""
        from sluice.stream.signals.codec import dump_detector

        return dump_detector(self)

    @classmethod
    def load(cls, raw: bytes, cfg: SignalSettings | None = None) -> SignalDetector:
        """A detector from `dump()`'s bytes, of this release's state version or an earlier one."""
        from sluice.stream.signals.codec import load_detector

        return load_detector(raw, cfg)

    # -- baseline --------------------------------------------------------------------------------

    def _absorb_old(self, hold: float | None = None) -> None:
        cfg = self.cfg
        horizon = int((self.watermark - cfg.baseline_delay_s) // cfg.bucket_s)
        if hold is not None:
            horizon = min(horizon, int(hold // cfg.bucket_s))
        self.telemetry.absorb_before(horizon)
        for n in sorted(k for k in self._buckets if k < horizon):
            b = self._buckets.pop(n)
            if not b.empty:
                self._absorb(b)
            self._absorbed = max(self._absorbed, n)

    def _absorb(self, b: _Bucket) -> None:
        a = self.cfg.alpha
        for svc in self._rates.keys() | b.services.keys():
            self._rates.setdefault(svc, _Ewma()).add(b.services.get(svc, 0), a)
        self._absorbed_n += 1
        now = self._absorbed_n
        for key, count in b.templates.items():
            self._template_rates.setdefault(key, _Decaying()).add(count, a, now)
        self._absorb_block(b)
        self._absorb_steps(b)
        keep = self.cfg.max_keys
        for table in (self._rates, self._block_rates, self._template_shares, self._edge_p95):
            _bound(table, keep)  # type: ignore[arg-type]
        for recent in (self._template_rates, self._traced):
            _bound_recent(recent, keep)
        for gone in self._next.keys() - self._traced.keys():
            del self._next[gone]

    def _absorb_block(self, b: _Bucket) -> None:
        self._block.update(b.services)
        self._block_templates.update(b.templates)
        for edge, gaps in b.gaps.items():
            pool = self._block_gaps.setdefault(edge, [])
            pool.extend(gaps[: _MAX_GAPS - len(pool)])
        self._block_n += 1
        if self._block_n < self.cfg.block_buckets:
            return
        ba = self.cfg.block_alpha
        for edge, gaps in self._block_gaps.items():  # a p95 per block: quiet edges have one too
            if len(gaps) >= 5:
                self._edge_p95.setdefault(edge, _Ewma()).add(_p95(gaps), ba)
        self._block_gaps = {}
        for svc in self._block_rates.keys() | self._block.keys():
            rate = self._block.get(svc, 0) / self._block_n
            self._block_rates.setdefault(svc, _Ewma()).add(rate, ba)
        total = sum(self._block.values())
        for key in self._template_shares.keys() | self._block_templates.keys():
            share = self._block_templates.get(key, 0) / total
            self._template_shares.setdefault(key, _Ewma()).add(
                share, ba, clip=_CLIP, warm=self.cfg.min_blocks
            )
        self._block, self._block_n = Counter(), 0
        self._block_templates = Counter()

    def _absorb_steps(self, b: _Bucket) -> None:
        """Per line seen in traces: the share of its occurrences each next line followed. A
        step missing now (`_Step.missing`) is held, not learned, for at most `max_held_buckets`
        in a row: the fault is not the new normal until it has lasted that long."""
        cfg, a = self.cfg, self.cfg.alpha
        for line, seen in b.traced.items():
            self._traced.setdefault(line, _Decaying()).add(seen, a, self._absorbed_n)
            nxt = self._next.setdefault(line, {})
            happened = b.steps.get(line, Counter())
            for after in nxt.keys() | happened.keys():
                k = happened.get(after, 0)
                share = nxt.get(after)
                if share is None:
                    share = nxt[after] = _Step()
                share.seen = _RECENT * share.seen + seen
                share.hits = _RECENT * share.hits + k
                missing = share.missing(cfg, seen, k)
                if missing and share.held < cfg.max_held_buckets:
                    share.held += 1
                    continue
                held = share.held if missing else 0  # still missing after that long: learn it
                share.add(min(1.0, k / seen), a)
                share.held = held
            if len(nxt) > _MAX_NEXT:
                for gone in sorted(nxt, key=lambda k: (nxt[k].mean, k))[: len(nxt) - _MAX_NEXT]:
                    del nxt[gone]

    # -- output ----------------------------------------------------------------------------------

    def signals(self, start: float, end: float, lines: bool = True) -> list[Signal]:
        """The signals of the span [start, end) of event time, strongest first: those of the
        lines (unless `lines` is false) and of spans and metrics (unless `cfg.telemetry` is)."""
        size = self.cfg.bucket_s
        found: list[Signal] = []
        if self.cfg.telemetry:
            found += self.telemetry.signals(math.ceil(start / size), math.ceil(end / size))
        span = [
            b
            for n, b in self._buckets.items()
            if start <= n * size < end and not b.empty and n > self._absorbed
        ]
        if span and lines:
            found += [
                *self._rate_signals(span),
                *self._template_signals(span),
                *self._missing_steps(span),
                *self._edges(span),
            ]
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
        observed: Counter[Key] = Counter()
        for b in span:
            observed.update(b.templates)
        yield from self._template_drops(span, observed)
        for (svc, template), obs in observed.most_common():
            svc_base = self._rates.get(svc)
            if svc_base is None or svc_base.n < cfg.min_history:
                continue  # a service without history: everything it logs is new
            base = self._template_rates.get((svc, template))
            usual = base.at(cfg.alpha, self._absorbed_n) if base is not None else 0.0
            if usual < 1e-9:
                if obs >= cfg.min_new:
                    strength = min(1.0, obs / (10 * cfg.min_new))
                    yield Signal("new_template", svc,
                                 f"{svc}: new line x{obs}: {_brief(template, 120)}",
                                 round(strength, 3), template=template)  # fmt: skip
                continue
            exp = usual * nb
            if obs >= cfg.spike_ratio * exp and obs - exp >= cfg.min_spike:
                strength = min(1.0, (obs / max(exp, 1.0)) / (4 * cfg.spike_ratio))
                yield Signal("template_spike", svc,
                             f"{svc}: x{obs} vs {exp:.0f} expected: {_brief(template, 120)}",
                             round(strength, 3), template=template)  # fmt: skip

    def _template_drops(self, span: list[_Bucket], observed: Counter[Key]) -> Iterator[Signal]:
        """Lines whose share of the scope's events fell far below their usual share, beyond how
        much that share moves from one block to the next (lines that come and go with the
        request mix do not count). For logs without traces; with traces, `missing_step` says
        more precisely which line stopped following which."""
        cfg = self.cfg
        traffic = sum(sum(b.services.values()) for b in span)
        if traffic <= 0:
            return
        for (svc, template), share in self._template_shares.items():
            if share.n < cfg.min_blocks or (svc, template) in self._traced:
                continue  # too young, or judged by its steps
            exp = share.mean * traffic
            obs = observed.get((svc, template), 0)
            if exp < cfg.min_expected_line or obs > cfg.line_drop_ratio * exp:
                continue
            noise = math.sqrt(share.var + share.mean / traffic)
            z = (share.mean - obs / traffic) / max(noise, 1e-12)
            if z < cfg.min_z:
                continue
            strength = min(1.0, z / (3 * cfg.min_z))
            yield Signal("template_drop", svc,
                         f"{svc}: x{obs} vs {exp:.0f} expected: {_brief(template, 120)}",
                         round(strength, 3), template=template)  # fmt: skip

    def _missing_steps(self, span: list[_Bucket]) -> Iterator[Signal]:
        """Per line that usually follows another in a trace: did it follow in the span as often
        (a binomial tail: how improbable so few are under the usual share)?"""
        cfg = self.cfg
        seen: Counter[Key] = Counter()
        happened: dict[Key, Counter[Key]] = {}
        for b in span:
            seen.update(b.traced)
            for line, nxt in b.steps.items():
                happened.setdefault(line, Counter()).update(nxt)
        best: dict[tuple[str, Key], Signal] = {}
        for line, n in seen.items():
            for after, share in self._next.get(line, {}).items():
                if share.n < cfg.min_step_history or share.mean < cfg.min_step_share:
                    continue
                if is_alarming("", after[1]):
                    continue  # an error line that stopped following: a recovery, not a fault
                p = min(share.mean, 0.99)
                exp, k = p * n, happened.get(line, Counter()).get(after, 0)
                if exp < cfg.min_expected_step or k > cfg.line_drop_ratio * exp:
                    continue
                surprise = _binomial_surprise(k, n, p)
                if surprise < cfg.min_surprise:
                    continue
                strength = round(min(1.0, surprise / (4 * cfg.min_surprise)), 3)
                key = (after[0], line)  # one per missing service after a line: the strongest,
                had = best.get(key)  # and of equals the call into it (the whole service)
                if had is not None and (had.strength, had.template is None) >= (
                    strength,
                    after[1] == ANY_LINE,
                ):
                    continue
                svc, template = after
                what = f"any line of {svc}" if template == ANY_LINE else _brief(template, 90)
                text = (f"{svc}: x{k} of {n} times vs {p:.0%} usually after "
                        f"{line[0]} \"{_brief(line[1], 60)}\": {what}")  # fmt: skip
                best[key] = Signal(
                    "missing_step",
                    svc,
                    text,
                    strength,
                    caller=line[0] if line[0] != svc else None,
                    template=None if template == ANY_LINE else template,
                )
        yield from best.values()

    def _edges(self, span: list[_Bucket]) -> Iterator[Signal]:
        cfg = self.cfg
        gaps: dict[tuple[str, str], list[float]] = {}
        for b in span:
            for edge, xs in b.gaps.items():
                gaps.setdefault(edge, []).extend(xs)
        for (caller, callee), xs in gaps.items():
            base = self._edge_p95.get((caller, callee))
            if base is None or base.n < cfg.min_blocks or len(xs) < cfg.min_gaps:
                continue
            p95 = _p95(xs)
            z = (p95 - base.mean) / math.sqrt(max(1e-6, base.var))
            if (p95 >= cfg.slow_ratio * base.mean and p95 - base.mean >= cfg.min_slow_s
                    and z >= cfg.min_z):  # fmt: skip
                strength = min(1.0, p95 / max(base.mean, 1e-3) / (4 * cfg.slow_ratio))
                if caller == callee:
                    text = (
                        f"{callee}: p95 time between its own lines in a trace "
                        f"{p95 * 1000:.0f} ms vs baseline {base.mean * 1000:.0f} ms"
                    )
                    yield Signal("slow_edge", callee, text, round(strength, 3))
                    continue
                text = (f"{caller} -> {callee}: p95 gap {p95 * 1000:.0f} ms vs baseline "
                        f"{base.mean * 1000:.0f} ms")  # fmt: skip
                yield Signal("slow_edge", callee, text, round(strength, 3), caller=caller)

    def rates(self) -> dict[str, tuple[float, int]]:
        """Per service in the baseline: its usual events per bucket, and the buckets it learned
        from."""
        return {svc: (r.mean, r.n) for svc, r in self._rates.items()}

    def latencies(self, start: float, end: float, top: int = 30) -> list[EdgeLatency]:
        """The caller -> callee edges measured in the span [start, end): p95 gap and the edge's
        usual p95, the busiest `top` edges (the report's service graph with latencies)."""
        size = self.cfg.bucket_s
        gaps: dict[tuple[str, str], list[float]] = {}
        for n, b in self._buckets.items():
            if start <= n * size < end and n > self._absorbed:
                for edge, xs in b.gaps.items():
                    if edge[0] != edge[1]:
                        gaps.setdefault(edge, []).extend(xs)
        busiest = sorted(gaps.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
        out = []
        for (caller, callee), xs in busiest:
            if len(xs) < 3:
                continue
            base = self._edge_p95.get((caller, callee))
            usual = round(base.mean * 1000, 1) if base and base.n >= self.cfg.min_blocks else None
            out.append(EdgeLatency(source=caller, target=callee, p95_ms=round(_p95(xs) * 1000, 1),
                                   baseline_p95_ms=usual, gaps=len(xs)))  # fmt: skip
        return out

    def edge_latency(self) -> dict[tuple[str, str], float]:
        """The baseline p95 gap (seconds) of each caller -> callee edge: the service graph's
        latencies."""
        return {
            e: v.mean
            for e, v in self._edge_p95.items()
            if v.n >= self.cfg.min_blocks and e[0] != e[1]
        }
