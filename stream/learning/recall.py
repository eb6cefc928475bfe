"""How much of what matters does the filter forward? An audit-based estimate of its recall.

Estimator. Flagged events are a census: every one reaches the analysis, so the relevant flagged
events (TP) are counted, not estimated. Unflagged events are seen only through the audit sample,
each drawn independently with probability p; the relevant ones among them (A) estimate the
relevant events the filter missed by Horvitz-Thompson, FN = A / p, which is unbiased. The recall
estimate is TP / (TP + FN).

Interval (95% by default). A is a thinned count of the misses: Binomial(FN, p) with small p, i.e.
Poisson. Its exact (Garwood) interval, divided by p, bounds FN, and recall is monotone in FN, so
the bounds carry over. Exact rather than a normal approximation because A is small: often 0 to
a few dozen per model version, where a Wald interval has zero width at A = 0 and undercovers
above it.

Unequal probabilities (first sight, `stream.verdicts`): a relevant event drawn with p = 1 is a
miss counted, not estimated; those drawn with a raised p (audit rate < p < 1) form a stratum of
their own, estimated by Horvitz-Thompson with each event's own 1/p, its interval the Garwood
interval of its count scaled by the stratum's mean rate. The strata's bounds are added, which
covers at least as often as each (checked by simulation in the tests). TP is treated as exact;
the labels are the LLM's verdicts on the events' templates
(what the filter is meant to learn), so heuristic and degraded analyses are not counted, and
events of templates the analysis gave no verdict on are left out (their count is reported).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sluice.stream.records import Outcome

__all__ = ["RecallEstimate", "RecallTally", "estimate_recall", "poisson_interval"]


@dataclass(frozen=True)
class RecallEstimate:
    """Recall of one model version with its interval; None where there is nothing to estimate."""

    model_version: str
    recall: float | None
    low: float | None
    high: float | None
    flagged_positive: int
    audited_positive: int
    audited: int
    missed_estimate: float
    unlabelled: int
    windows: int

    def text(self) -> str:
        if self.recall is None or self.low is None or self.high is None:
            return f"n/a ({self.windows} windows, no relevant events yet)"
        return (
            f"{self.recall:.3f} [{self.low:.3f}, {self.high:.3f}] "
            f"({self.flagged_positive} flagged relevant, {self.audited_positive} of "
            f"{self.audited} audit samples relevant, {self.windows} windows)"
        )


def poisson_interval(k: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval for the mean of a Poisson count k."""
    from scipy.stats import chi2

    alpha = 1 - confidence
    low = 0.0 if k == 0 else float(chi2.ppf(alpha / 2, 2 * k)) / 2
    high = float(chi2.ppf(1 - alpha / 2, 2 * k + 2)) / 2
    return low, high


class RecallTally:
    """Running sums of `outcomes` records per model version (the worker's metric keeps one)."""

    def __init__(self, *, include_heuristic: bool = False) -> None:
        self._include_heuristic = include_heuristic
        self._acc: dict[str, _Sums] = {}

    def add(self, o: Outcome) -> None:
        if o.analysis != "llm" and not (self._include_heuristic and o.analysis == "heuristic"):
            return
        a = self._acc.setdefault(o.model_version, _Sums())
        plain_positive = o.audited_positive - o.census_positive - o.raised_positive
        plain = plain_positive + o.audited_negative - o.raised_negative
        a.tp += o.flagged_positive
        a.census += o.census_positive
        a.k += plain_positive
        a.audited += o.audited_positive + o.audited_negative
        if o.audit_rate > 0:
            a.fn_hat += plain_positive / o.audit_rate
            a.population += plain / o.audit_rate
        a.plain += plain
        a.k_raised += o.raised_positive
        a.fn_raised += o.raised_weight
        a.unlabelled += o.unlabelled
        a.windows += 1
        a.max_rate = max(a.max_rate, o.audit_rate)

    def estimates(self, confidence: float = 0.95) -> dict[str, RecallEstimate]:
        return {v: _estimate(v, a, confidence) for v, a in self._acc.items()}


@dataclass
class _Sums:
    tp: int = 0  # flagged relevant events: a census
    census: int = 0  # relevant events drawn with probability 1: misses, counted
    k: int = 0  # relevant events of the plain audit sample
    fn_hat: float = 0.0  # their Horvitz-Thompson total
    plain: int = 0  # events of the plain audit sample
    population: float = 0.0  # unflagged events it stands for
    k_raised: int = 0  # relevant events drawn with audit rate < p < 1
    fn_raised: float = 0.0  # their Horvitz-Thompson total (each 1/p)
    audited: int = 0
    unlabelled: int = 0
    windows: int = 0
    max_rate: float = 0.0


def estimate_recall(
    outcomes: Iterable[Outcome], *, confidence: float = 0.95, include_heuristic: bool = False
) -> dict[str, RecallEstimate]:
    """Per model version, from the `outcomes` topic's records."""
    tally = RecallTally(include_heuristic=include_heuristic)
    for o in outcomes:
        tally.add(o)
    return tally.estimates(confidence)


def _estimate(version: str, a: _Sums, confidence: float) -> RecallEstimate:
    # The plain audit's rate (the harmonic mean of the windows' rates when they differ).
    rate = a.plain / a.population if a.population else a.max_rate
    fn_hat = a.census + a.fn_hat + a.fn_raised
    recall = None
    low, high = (0.0, 1.0) if rate > 0 else (None, None)  # nothing relevant seen: no information
    if rate > 0 and a.tp + fn_hat > 0:
        lo_k, hi_k = poisson_interval(a.k, confidence)
        # First sight: a stratum of its own, its rate the one its relevant draws had on average.
        lo_r, hi_r = poisson_interval(a.k_raised, confidence) if a.k_raised else (0.0, 0.0)
        raised_rate = a.k_raised / a.fn_raised if a.k_raised else 1.0
        fn_low = a.census + lo_k / rate + lo_r / raised_rate
        fn_high = a.census + hi_k / rate + hi_r / raised_rate
        recall = a.tp / (a.tp + fn_hat)
        low = a.tp / (a.tp + fn_high)
        high = a.tp / (a.tp + fn_low) if a.tp + fn_low > 0 else 1.0
    return RecallEstimate(
        model_version=version,
        recall=recall,
        low=low,
        high=high,
        flagged_positive=a.tp,
        audited_positive=a.k + a.k_raised + a.census,
        audited=a.audited,
        missed_estimate=fn_hat,
        unlabelled=a.unlabelled,
        windows=a.windows,
    )
