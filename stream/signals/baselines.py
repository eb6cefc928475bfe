"""The detector's baselines: exponentially weighted means and variances, decaying rates, the
steps of traces, and the event-time buckets not folded into them yet.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from sluice.stream.settings import SignalSettings
from sluice.stream.signals.counter import Key

__all__ = []


#: Gaps kept per edge and bucket (a p95 needs no more).
_MAX_GAPS = 500


#: Decay per bucket of a step's recent counts (what "missing now" looks at: the last ~5 buckets).
_RECENT = 0.8


#: Robust baselines: a deviation moves a line's share by at most this many standard deviations.
_CLIP = 2.0


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
