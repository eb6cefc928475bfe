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
above it. TP is treated as exact; the labels are the LLM's verdicts on the events' templates
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
        # per version: tp, a, audited, fn_hat, sum(audited/p), unlabelled, windows, max rate
        self._acc: dict[str, list[float]] = {}

    def add(self, o: Outcome) -> None:
        if o.analysis != "llm" and not (self._include_heuristic and o.analysis == "heuristic"):
            return
        a = self._acc.setdefault(o.model_version, [0.0] * 8)
        audited = o.audited_positive + o.audited_negative
        a[0] += o.flagged_positive
        a[1] += o.audited_positive
        a[2] += audited
        if o.audit_rate > 0:
            a[3] += o.audited_positive / o.audit_rate
            a[4] += audited / o.audit_rate
        a[5] += o.unlabelled
        a[6] += 1
        a[7] = max(a[7], o.audit_rate)

    def estimates(self, confidence: float = 0.95) -> dict[str, RecallEstimate]:
        return {v: _estimate(v, a, confidence) for v, a in self._acc.items()}


def estimate_recall(
    outcomes: Iterable[Outcome], *, confidence: float = 0.95, include_heuristic: bool = False
) -> dict[str, RecallEstimate]:
    """Per model version, from the `outcomes` topic's records."""
    tally = RecallTally(include_heuristic=include_heuristic)
    for o in outcomes:
        tally.add(o)
    return tally.estimates(confidence)


def _estimate(version: str, a: list[float], confidence: float) -> RecallEstimate:
    tp, k, audited, fn_hat, population, unlabelled, windows, max_rate = a
    # The sampling rate the audit count was drawn at (their harmonic mean when rates differ).
    rate = audited / population if population else max_rate
    recall = None
    low, high = (0.0, 1.0) if rate > 0 else (None, None)  # nothing relevant seen: no information
    if rate > 0 and tp + fn_hat > 0:
        lo_k, hi_k = poisson_interval(int(k), confidence)
        recall = tp / (tp + fn_hat)
        low = tp / (tp + hi_k / rate)
        high = tp / (tp + lo_k / rate) if tp + lo_k > 0 else 1.0
    return RecallEstimate(
        model_version=version,
        recall=recall,
        low=low,
        high=high,
        flagged_positive=int(tp),
        audited_positive=int(k),
        audited=int(audited),
        missed_estimate=fn_hat,
        unlabelled=int(unlabelled),
        windows=int(windows),
    )
