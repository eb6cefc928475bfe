"""What the filter stage decides beyond the model's score: first sight and per-template verdicts.

The model alone cannot learn what it never shows the LLM: a rare failure in a template it scores
low reaches the analysis only through the audit sample, with probability `audit_rate` per event.
Two things close that loop without waiting for a retrain:

- **First sight.** A template that holds no verdict is forwarded on each of its first k
  sightings, then with probability k/n on its n-th, down to the audit rate. Within minutes of
  deployment the LLM has judged every template that occurs. A token bucket bounds these forwards
  per minute; a sighting beyond it is drawn at the audit rate, and counted (never silent).
- **Verdicts.** Every worker follows `feedback` into a `VerdictCache` (a person's verdict over the
  LLM's, the latest within a source; heuristic verdicts are not applied, as they do not train).
  A relevant template is forwarded whatever its score; a not relevant one only by the audit.

Each forwarded event records why (`Suspect.reason`), the verdict that decided it, and the
probability it was drawn with, so the recall estimate stays unbiased (Horvitz-Thompson with each
suspect's own probability, `stream.recall`). One uniform draw per record (its CRC, as the audit
always used) decides: forwarded when draw < p, so p is exactly its inclusion probability.

Shared across workers: verdicts, through `feedback` (each worker applies every verdict within
seconds of its publication). Sightings are counted per worker: before the first verdict on a
template arrives, each of W workers that sees it may forward its first k (at most W*k).
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from sluice.stream.records import Feedback, read_record
from sluice.stream.settings import FirstSightSettings

__all__ = ["Decision", "FirstSight", "Verdict", "VerdictCache", "decide"]

VerdictSource = Literal["human", "llm", "audit"]
Reason = Literal["model", "verdict", "first_sight", "audit"]
_RANK = {"human": 2, "llm": 1, "audit": 1}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The verdict in force for one template: what was said, by whom, when."""

    relevant: bool
    source: VerdictSource
    at: datetime


class VerdictCache:
    """Per-template verdicts, bounded: at most `cap`, the least recently given evicted first."""

    def __init__(self, cap: int = 50_000) -> None:
        self._cap = cap
        self._by_template: OrderedDict[str, Verdict] = OrderedDict()
        self.applied = 0  # verdicts that changed what the cache holds
        self.ignored = 0  # heuristic, or a machine verdict under a person's
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._by_template)

    def get(self, template: str) -> Verdict | None:
        return self._by_template.get(template)

    def apply(self, fb: Feedback) -> bool:
        """Take one feedback record; True when it changed the verdict of its template."""
        if fb.source == "heuristic":  # the offline analyst's guess: neither applied nor trained
            self.ignored += 1
            return False
        new = Verdict(fb.label, fb.source, fb.at or _EPOCH)
        cur = self._by_template.get(fb.template)
        if cur is not None and (_RANK[new.source], new.at) < (_RANK[cur.source], cur.at):
            self.ignored += 1
            return False
        self._by_template[fb.template] = new
        self._by_template.move_to_end(fb.template)
        self.applied += 1
        while len(self._by_template) > self._cap:
            self._by_template.popitem(last=False)
            self.evicted += 1
        return True

    def apply_bytes(self, raw: bytes) -> None:
        """A record of the `feedback` topic (for a TopicFollower); a record that is not one
        raises RecordError, a ValueError, which the follower counts and skips."""
        if raw:  # else a tombstone
            self.apply(read_record(Feedback, raw))


class FirstSight:
    """Sightings per template and the budget of first-sight forwards (a token bucket)."""

    def __init__(
        self, cfg: FirstSightSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cfg = cfg
        self._clock = clock
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._tokens = cfg.budget_per_min
        self._refilled = clock()
        self.forwarded = 0  # events forwarded on first sight (beyond what the audit would send)
        self.over_budget = 0  # first-sight draws made at the audit rate for want of budget
        self.forgotten = 0  # templates whose count was dropped (max_templates)

    def horizon(self, audit_rate: float) -> float:
        """The sighting from which k/n is no more than the audit rate."""
        return self.cfg.forwards / audit_rate if audit_rate > 0 else math.inf

    def sightings(self, counts: Counter[str], audit_rate: float) -> dict[str, int]:
        """Count a batch's sightings; returns {template: sightings before this batch} for the
        templates still young (under the horizon) before it."""
        seen = self._seen
        horizon = self.horizon(audit_rate)
        young: dict[str, int] = {}
        for t, c in counts.items():
            n0 = seen.get(t, 0)
            if n0 < horizon:
                young[t] = n0
                seen[t] = n0 + c
                if n0 == 0 and len(seen) > self.cfg.max_templates:
                    seen.popitem(last=False)
                    self.forgotten += 1
        return young

    def available(self) -> bool:
        """Whether the budget holds a forward now (refilled at budget_per_min, up to a minute's)."""
        now = self._clock()
        cap = self.cfg.budget_per_min
        self._tokens = min(cap, self._tokens + (now - self._refilled) * cap / 60.0)
        self._refilled = now
        return self._tokens >= 1.0

    def spend(self) -> None:
        self._tokens -= 1.0


@dataclass
class Decision:
    """Per event of a batch: forwarded, drawn (not flagged), its inclusion probability, why."""

    forward: npt.NDArray[np.bool_]
    audit: npt.NDArray[np.bool_]
    probability: npt.NDArray[np.float64]
    reason: dict[int, Reason] = field(default_factory=dict)  # only where not the plain one
    verdict: dict[int, VerdictSource] = field(default_factory=dict)
    first_sight: int = 0
    by_verdict: int = 0  # forwarded because a verdict said relevant, though the model did not
    held_back: int = 0  # flagged by the model, not forwarded: a verdict said not relevant


def decide(
    templates: Sequence[str],
    flagged: npt.NDArray[np.bool_],
    draws: npt.NDArray[np.float64],
    audit_rate: float,
    verdicts: VerdictCache | None,
    first: FirstSight | None,
) -> Decision:
    """The forwarding decision of one batch: the model's flags, overruled by verdicts, plus the
    audit sample, raised to k/n for templates on first sight (within the budget)."""
    n = len(flagged)
    prob = np.full(n, audit_rate, dtype=np.float64)
    fwd = flagged.copy()
    out = Decision(fwd, np.zeros(n, dtype=bool), prob)
    marks: dict[str, Any] = {}
    young: dict[str, int] = {}
    if verdicts is not None or first is not None:
        counts = Counter(templates)
        if verdicts is not None and len(verdicts):
            for t in counts:
                v = verdicts.get(t)
                if v is not None:
                    marks[t] = v
        if first is not None:
            fresh = Counter({t: c for t, c in counts.items() if t not in marks})
            young = first.sightings(fresh, audit_rate)
            marks.update(young)
    if marks:
        seen_in_batch: dict[str, int] = {}
        for j, t in enumerate(templates):
            m = marks.get(t)
            if m is None:
                continue
            if isinstance(m, Verdict):
                out.verdict[j] = m.source
                if m.relevant and not fwd[j]:
                    fwd[j] = True
                    out.reason[j] = "verdict"
                    out.by_verdict += 1
                elif not m.relevant and fwd[j]:
                    fwd[j] = False
                    out.held_back += 1
                continue
            k = seen_in_batch.get(t, m) + 1  # this is the template's k-th sighting
            seen_in_batch[t] = k
            if fwd[j]:  # the model forwards it anyway
                continue
            p = min(1.0, first.cfg.forwards / k) if first is not None else audit_rate
            if p <= audit_rate:
                continue
            if draws[j] < audit_rate:
                prob[j] = p  # drawn anyway: its probability is p all the same
                out.reason[j] = "first_sight"
                continue
            if first is not None and not first.available():
                first.over_budget += 1  # drawn at the audit rate: the default probability
                continue
            prob[j] = p  # decided before the draw: p is its inclusion probability
            if draws[j] < p:
                if first is not None:
                    first.spend()
                out.reason[j] = "first_sight"
                out.first_sight += 1
    out.audit = ~fwd & (draws < prob)
    out.forward = fwd | out.audit
    if first is not None:
        first.forwarded += out.first_sight
    return out
