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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from sluice.models.analyst import EdgeLatency, Signal, SignalKind, is_alarming
from sluice.stream._settings import SignalSettings
from sluice.stream.records import SignalCounts

__all__ = ["SignalCounter", "SignalDetector", "SignalSettings", "counts_of"]

#: Gaps kept per edge and bucket (a p95 needs no more).
_MAX_GAPS = 500
#: Per batch: gaps per edge and bucket, gaps in all, and rows of each other kind (a counts
#: record stays < 400 kB whatever the events name).
_MAX_BATCH_GAPS = 10
_MAX_BATCH_GAP_ROWS = 2000
_MAX_BATCH_ROWS = 1000
#: Service names and line shapes are counted by their first characters (untrusted input).
_MAX_NAME = 100
_MAX_TEMPLATE = 160
_MAX_TRACE_ID = 128
_MAX_TRACE_SERVICES = 64  # services remembered per trace
#: Successors kept per line (the usual next lines; a step matters when it follows most times).
_MAX_NEXT = 8
#: Decay per bucket of a step's recent counts (what "missing now" looks at: the last ~5 buckets).
_RECENT = 0.8
#: Robust baselines: a deviation moves a line's share by at most this many standard deviations.
_CLIP = 2.0

Key = tuple[str, str]  # (service, template)
#: The template of a step into another service, whatever line it logs first.
ANY_LINE = "*"


@dataclass
class _Ewma:
    mean: float = 0.0
    var: float = 0.0
    n: int = 0

    def add(self, x: float, alpha: float, clip: float = 0.0, warm: int = 0) -> None:
        """One observation; with `clip`, once `warm` are in, a deviation counts for at most
        `clip` standard deviations (a fault teaches the baseline little of its symptoms)."""
        if self.n == 0:
            self.mean = x
        else:
            d = x - self.mean
            if clip and self.n >= warm and self.var > 0:
                bound = clip * math.sqrt(self.var)
                d = max(-bound, min(bound, d))
            self.mean += alpha * d
            self.var = (1 - alpha) * (self.var + alpha * d * d)
        self.n += 1

    def row(self) -> tuple[float, ...]:
        """Its fields in order, for a state dump (what `dataclasses.astuple` gives, far faster:
        that one deep-copies)."""
        return (self.mean, self.var, self.n)


@dataclass
class _Decaying:
    """An exponentially weighted mean per absorbed bucket that only costs work when its key is
    in a bucket: the buckets without it are zeros, applied at once ((1 - alpha) per bucket)."""

    mean: float = 0.0
    n: int = 0
    last: int = 0  # the absorbed-bucket count when it was last updated

    def add(self, x: float, alpha: float, now: int) -> None:
        if self.n == 0:
            self.mean = x
        else:
            self.mean = self.at(alpha, now - 1)
            self.mean += alpha * (x - self.mean)
        self.n, self.last = self.n + 1, now

    def at(self, alpha: float, now: int) -> float:
        """The mean as of `now` absorbed buckets."""
        return self.mean * (1 - alpha) ** max(0, now - self.last)

    def row(self) -> tuple[float, ...]:
        return (self.mean, self.n, self.last)


@dataclass
class _Step(_Ewma):
    """How often a next line follows a line (`mean`), and what the last buckets saw of it (a
    decayed count of the line and of this next line after it): a step that is missing now (so
    few times that it is improbable under the usual share, in this bucket or the last few) is
    held out of its baseline."""

    held: int = 0  # buckets in a row it did not learn from (it was missing in them)
    seen: float = 0.0
    hits: float = 0.0

    def row(self) -> tuple[float, ...]:
        return (self.mean, self.var, self.n, self.held, self.seen, self.hits)

    def missing(self, cfg: SignalSettings, seen: int, hits: int) -> bool:
        """Missing now: in this bucket (`seen` times the line, `hits` times this next line
        after it) or in the last few, far fewer times than usual."""
        if self.n < cfg.min_step_history or self.mean < cfg.min_step_share:
            return False
        p, ratio, enough = min(self.mean, 0.99), cfg.line_drop_ratio, cfg.min_surprise / 2
        for n, k in ((seen, hits), (round(self.seen), round(self.hits))):
            if n and k <= ratio * p * n and _binomial_surprise(k, n, p) >= enough:
                return True
        return False


@dataclass
class _Bucket:
    services: Counter[str] = field(default_factory=Counter)
    templates: Counter[Key] = field(default_factory=Counter)
    traced: Counter[Key] = field(default_factory=Counter)  # lines that carried a trace id
    steps: dict[Key, Counter[Key]] = field(default_factory=dict)  # line -> next line -> times
    gaps: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.services


def _p95(xs: Sequence[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, math.ceil(0.95 * len(s)) - 1)]


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

    def add_counts(self, rec: SignalCounts) -> None:
        """Counts the filter stage made of a batch; buckets in the baseline already are too late
        to count."""
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
        self._absorb_old()

    # -- state -----------------------------------------------------------------------------------

    def dump(self) -> bytes:
        """The detector's state (baselines and the buckets not in them yet), for a state store.
        Service names and line shapes are written once, in `strings`, and referred to by
        position (each appears in several tables)."""
        pos: dict[str, int] = {}

        def at(text: str) -> int:
            return pos.setdefault(text, len(pos))

        def ewmas(table: Mapping[Key, _Ewma | _Decaying]) -> list[list[object]]:
            return [[at(s), at(t), *v.row()] for (s, t), v in table.items()]

        def bucket(b: _Bucket) -> list[object]:
            return [
                [[at(s), c] for s, c in b.services.items()],
                [[at(s), at(t), c, b.traced.get((s, t), 0)] for (s, t), c in b.templates.items()],
                [[at(a), at(c), g] for (a, c), g in b.gaps.items()],
                [[at(s), at(t), [[at(s2), at(t2), k] for (s2, t2), k in nxt.items()]]
                 for (s, t), nxt in b.steps.items()],
            ]  # fmt: skip

        state: dict[str, object] = {
            "absorbed": self._absorbed,
            "watermark": self.watermark if self.watermark > -math.inf else None,
            "rates": [[at(k), *v.row()] for k, v in self._rates.items()],
            "block_rates": [[at(k), *v.row()] for k, v in self._block_rates.items()],
            "block": [[[at(k), c] for k, c in self._block.items()], self._block_n,
                      [[at(s), at(t), c] for (s, t), c in self._block_templates.items()],
                      [[at(a), at(c), g] for (a, c), g in self._block_gaps.items()]],
            "shares": ewmas(self._template_shares),
            "absorbed_n": self._absorbed_n,
            "templates": ewmas(self._template_rates),
            "traced": ewmas(self._traced),
            "next": [[at(s), at(t), ewmas(nxt)] for (s, t), nxt in self._next.items()],
            "edges": [[at(a), at(b), *v.row()] for (a, b), v in self._edge_p95.items()],
            "buckets": [[n, bucket(b)] for n, b in sorted(self._buckets.items())],
        }  # fmt: skip
        state["strings"] = list(pos)
        return orjson.dumps(state)

    @classmethod
    def load(cls, raw: bytes, cfg: SignalSettings | None = None) -> SignalDetector:
        x = orjson.loads(raw)
        text: list[str] = x["strings"]

        def ewmas(rows: list[list[Any]], kind: type[Any] = _Ewma) -> dict[Key, Any]:
            return {(text[s], text[t]): kind(*v) for s, t, *v in rows}

        def pairs(rows: list[list[Any]]) -> dict[Key, Any]:
            return {(text[a], text[b]): v for a, b, v in rows}

        d = cls(cfg)
        d._absorbed = int(x["absorbed"])
        d.watermark = float(x["watermark"]) if x["watermark"] is not None else -math.inf
        d._rates = {text[k]: _Ewma(*v) for k, *v in x["rates"]}
        d._block_rates = {text[k]: _Ewma(*v) for k, *v in x["block_rates"]}
        block, d._block_n, templates, gaps = x["block"]
        d._block = Counter({text[k]: c for k, c in block})
        d._block_templates = Counter(pairs(templates))
        d._block_gaps = {k: list(g) for k, g in pairs(gaps).items()}
        d._template_shares = ewmas(x["shares"])
        d._absorbed_n = int(x["absorbed_n"])
        d._template_rates = ewmas(x["templates"], _Decaying)
        d._traced = ewmas(x["traced"], _Decaying)
        d._next = {(text[s], text[t]): ewmas(nxt, _Step) for s, t, nxt in x["next"]}
        d._edge_p95 = {(text[a], text[b]): _Ewma(*v) for a, b, *v in x["edges"]}
        for n, (services, lines, edge_gaps, steps) in x["buckets"]:
            b = d._buckets[int(n)] = _Bucket()
            b.services.update({text[k]: c for k, c in services})
            for sv, t, c, traced in lines:
                b.templates[(text[sv], text[t])] = c
                if traced:
                    b.traced[(text[sv], text[t])] = traced
            b.gaps.update({k: list(g) for k, g in pairs(edge_gaps).items()})
            for sv, t, nxt in steps:
                b.steps[(text[sv], text[t])] = Counter(pairs(nxt))
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
        found = [
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


@dataclass(slots=True)
class _Trace:
    """What the counter remembers of one trace."""

    first: dict[str, float]  # when each service first logged in it
    svc: str  # the service that logged last
    at: float  # and when
    line: Key | None = None  # the last line (service, template)
    bucket: int = 0  # its bucket
    repeated: bool = False  # the last line repeated (its self-step is counted)


class SignalCounter:
    """The filter stage's side: counts batches into `SignalCounts` records. It keeps the traces
    it has seen (at most `max_traces`, none longer than `trace_ttl_s` of event time) so that
    hops and steps of a trace that spans batches are counted too.

    A service's caller is the service that logged last in the trace before the service first
    appeared (logs carry trace ids, not parent spans); a step is a line and the next line of
    its trace. A run of one line counts as one occurrence, and as one step to itself when it
    repeats (two log calls of one shape in a row: the second one missing is a step missing)."""

    def __init__(self, bucket_s: float, trace_ttl_s: float = 120.0, max_traces: int = 50_000):
        self.bucket_s = bucket_s
        self.trace_ttl_s = trace_ttl_s
        self.max_traces = max_traces
        self._traces: dict[str, _Trace] = {}

    def count(
        self,
        scope: str,
        ts: Sequence[float],
        services: Sequence[str],
        traces: Sequence[str | None],
        templates: Sequence[str] | None = None,
    ) -> SignalCounts:
        """One batch's events of one scope. Events without a time count at the batch's newest
        time. Bounded whatever the input: the busiest rows are kept."""
        known = [t for t in ts if t == t]  # not NaN
        latest = max(known) if known else 0.0
        size = self.bucket_s
        at = ts if len(known) == len(ts) else [t if t == t else latest for t in ts]
        buckets = [int(t // size) for t in at]
        names = _cut(services, _MAX_NAME)
        per = Counter(zip(buckets, names, strict=True))
        lines: Counter[tuple[int, str, str]] = Counter()
        shapes: Sequence[str] = ()
        if templates is not None:
            shapes = _cut(templates, _MAX_TEMPLATE)
            lines.update(zip(buckets, names, shapes, strict=True))
        gaps: list[tuple[int, str, str, float]] = []
        per_edge: dict[tuple[int, str, str], int] = {}
        traced: list[tuple[int, str, str]] = []  # counted at the end, in C
        steps: list[tuple[int, Key, Key]] = []
        state, shaped = self._traces, templates is not None
        for i, tid in enumerate(traces):
            if not tid:
                continue
            if len(tid) > _MAX_TRACE_ID:  # kept for minutes, 50,000 of them: bounded in bytes too
                tid = tid[:_MAX_TRACE_ID]
            t, n, svc = at[i], buckets[i], names[i]
            tr = state.get(tid)
            if tr is None:
                tr = state[tid] = _Trace({svc: t}, svc, t)
            else:
                # a hop into a service new to the trace, or the service's own time between two
                # of its lines in a row (its work: what CPU contention or a slow disk stretches)
                prev = tr.svc
                if (svc == prev or svc not in tr.first) and len(gaps) < _MAX_BATCH_GAP_ROWS:
                    key = (n, prev, svc)
                    c = per_edge.get(key, 0)
                    if c < _MAX_BATCH_GAPS:
                        per_edge[key] = c + 1
                        gaps.append((n, prev, svc, t - tr.at))
                if svc not in tr.first and len(tr.first) < _MAX_TRACE_SERVICES:
                    tr.first[svc] = t
                tr.svc, tr.at = svc, t
            if shaped:
                line = (svc, shapes[i])
                last = tr.line
                if line != last:
                    traced.append((n, svc, shapes[i]))
                    if last is not None:
                        steps.append((tr.bucket, last, line))
                    tr.line, tr.bucket, tr.repeated = line, n, False
                elif not tr.repeated:  # a line repeated is one step of its run (once per run)
                    steps.append((tr.bucket, line, line))
                    tr.repeated = True
        self._forget(latest)
        return _record(scope, size, per, gaps, lines, Counter(traced), Counter(steps))

    def _forget(self, now: float) -> None:
        """Traces beyond the bound, then those idle for `trace_ttl_s`, oldest first."""
        state = self._traces
        while len(state) > self.max_traces:
            del state[next(iter(state))]
        cutoff = now - self.trace_ttl_s
        for tid in list(state)[: max(0, len(state) - 1000)]:
            if state[tid].at < cutoff:
                del state[tid]


def _record(
    scope: str,
    bucket_s: float,
    per: Counter[tuple[int, str]],
    gaps: list[tuple[int, str, str, float]],
    lines: Counter[tuple[int, str, str]],
    traced: Counter[tuple[int, str, str]],
    steps: Counter[tuple[int, Key, Key]],
) -> SignalCounts:
    """The rows as a record, names and templates given once each; the busiest rows of each kind
    are kept (a record stays far below Kafka's record limit whatever the events name)."""
    names: dict[str, int] = {}
    shapes: dict[str, int] = {}

    def name(s: str) -> int:
        return names.setdefault(s, len(names))

    def shape(t: str) -> int:
        return shapes.setdefault(t, len(shapes))

    services = [(n, name(s), c) for (n, s), c in _busiest(per)]
    edges = [(n, name(a), name(b), round(max(0.0, g), 6)) for n, a, b, g in gaps]
    rows = [(n, name(s), shape(t), c, traced.get((n, s, t), 0))
            for (n, s, t), c in _busiest(lines)]  # fmt: skip
    moves = [(n, name(a[0]), shape(a[1]), name(b[0]), shape(b[1]), c)
             for (n, a, b), c in _busiest(steps)]  # fmt: skip
    return SignalCounts(scope=scope, bucket_s=bucket_s, names=list(names),
                        templates=list(shapes), services=services, gaps=edges, lines=rows,
                        steps=moves)  # fmt: skip


def _cut(texts: Sequence[str], n: int) -> Sequence[str]:
    """Each text at most `n` characters (the list itself when none is longer: no copy)."""
    if not texts or max(map(len, texts)) <= n:
        return texts
    return [t[:n] for t in texts]


_K = TypeVar("_K", bound=tuple[object, ...])


def _busiest(c: Counter[_K]) -> list[tuple[_K, int]]:
    """The rows of a counter, at most `_MAX_BATCH_ROWS` (the busiest)."""
    if len(c) > _MAX_BATCH_ROWS:
        return c.most_common(_MAX_BATCH_ROWS)
    return sorted(c.items())


def counts_of(
    scope: str,
    ts: Sequence[float],
    services: Sequence[str],
    traces: Sequence[str | None],
    bucket_s: float,
    templates: Sequence[str] | None = None,
) -> SignalCounts:
    """One batch counted on its own (no traces remembered from earlier batches)."""
    return SignalCounter(bucket_s).count(scope, ts, services, traces, templates)


def _binomial_surprise(k: int, n: int, p: float) -> float:
    """-ln P(X <= k) for X ~ Binomial(n, p): how improbable so few are (in nats)."""
    lp, lq = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    terms = [base - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lp + (n - j) * lq
             for j in range(k + 1)]  # fmt: skip
    top = max(terms)
    return -(top + math.log(sum(math.exp(x - top) for x in terms)))


def _bound_recent(table: dict[Key, _Decaying], keep: int) -> None:
    """Keep the `keep` keys seen most recently (then busiest): the idle ones go."""
    if len(table) > keep:
        for k in sorted(table, key=lambda k: (table[k].last, table[k].mean))[: len(table) - keep]:
            del table[k]


def _bound(table: dict[object, _Ewma], keep: int) -> None:
    """Keep the `keep` most active keys (by mean): the idle ones go."""
    if len(table) > keep:
        for k in sorted(table, key=lambda k: table[k].mean)[: len(table) - keep]:
            del table[k]
