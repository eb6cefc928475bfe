"""What applying a record to the analysis state produced: records to publish, windows due for
analysis, and the counters the metrics read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sluice.stream.analysis.triage import TriageCounters
from sluice.stream.records import Alert, DeadLetter, Feedback, Outcome, SuspectsRecord

__all__ = ["AnalysisCounters", "Effects", "Published"]


@dataclass
class AnalysisCounters:
    """What the analysis stage did, for metrics: windows by what closed them, analyses by kind,
    alerts by severity. An `AnalysisState` counts into its own; the worker merges them into the
    process's totals only once the record's effects are committed, so a retry counts once."""

    windows_opened: int = 0
    windows_closed: Counter[str] = field(default_factory=Counter)  # watermark|full|idle|end
    windows_analysed: Counter[str] = field(default_factory=Counter)  # llm|heuristic|degraded
    windows_given_up: int = 0
    alerts: Counter[str] = field(default_factory=Counter)  # severity
    #: new templates' triage: counted as it happens (it is outside the records' commits)
    triage: TriageCounters = field(default_factory=TriageCounters)

    def merge(self, other: AnalysisCounters) -> None:
        self.windows_opened += other.windows_opened
        self.windows_closed.update(other.windows_closed)
        self.windows_analysed.update(other.windows_analysed)
        self.windows_given_up += other.windows_given_up
        self.alerts.update(other.alerts)


@dataclass
class Published:
    """What publishing a scope's finished analyses produced, in order."""

    alerts: list[Alert] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    windows: int = 0

    def extend(self, other: Published) -> None:
        self.alerts += other.alerts
        self.feedback += other.feedback
        self.outcomes += other.outcomes
        self.dead += other.dead
        self.windows += other.windows


@dataclass
class Effects(Published):
    """What `AnalysisState.apply` did with one record: what to publish (in order, before the
    state is committed), the windows now due for analysis as (scope, seq, attempt), and the
    record itself as parsed (None when it was not a suspects record: a dead letter says why; or
    was of a kind only a newer release knows: skipped, counted in `stream.wire.WIRE`)."""

    record: SuspectsRecord | None = None
    due: list[tuple[str, int, int]] = field(default_factory=list)
    #: applied before (a replay after a crash): nothing to do, its effects are in the state
    replayed: bool = False
