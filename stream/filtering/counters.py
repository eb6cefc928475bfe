"""The filter stage's running totals, shared by the worker's loop (`filtering.stage`), `sluice
scan`'s summary and `/metrics`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Histogram

    from sluice.stream.filtering.screen import Screened
    from sluice.stream.filtering.verdicts import FirstSight, VerdictCache

__all__ = ["BATCH_SECONDS_BUCKETS", "StageCounters"]


def _histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
    """A histogram of no registry: its owner measures, the metrics collector reads it."""
    from prometheus_client import Histogram

    return Histogram(name, doc, buckets=buckets, registry=None)


#: Seconds to screen one batch: 2,000 events take about 10 ms on one core.
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class StageCounters:
    """Running totals of the filter stage, read by `/metrics` and by `sluice scan`'s summary.

    Every record read is counted once: `consumed` = `events` + `dead` + `joined` where a record
    holds one event (an OTLP request holds many: `otlp_records` of them held `otlp_items`; a
    stack trace's lines are one event, the lines after its first `joined`), and `events` =
    `flagged` + unflagged, audit samples among the unflagged. A parsed event whose suspect
    record cannot be built is a dead letter, not an event.
    """

    batches: int = 0
    consumed: int = 0
    events: int = 0
    flagged: int = 0
    audited: int = 0
    dead: int = 0
    first_sight: int = 0
    by_verdict: int = 0
    held_back: int = 0
    first_sight_over_budget: int = 0
    verdicts_held: int = 0
    verdicts_evicted: int = 0
    dead_by_kind: Counter[str] = field(default_factory=Counter)
    otlp_records: int = 0
    joined: int = 0  # records that continued the one before: one event with it (`multiline`)
    exemplars: int = 0  # slow or failed spans forwarded as suspects (`signals.spans`)
    telemetry_rows_dropped: int = 0  # span and metric rows beyond a counts record's bound
    otlp_items: Counter[str] = field(default_factory=Counter)  # by signal: logs, traces, metrics
    ignored: Counter[tuple[str, str]] = field(default_factory=Counter)  # (field, its type)
    model_version: str = ""
    model_swaps: int = 0
    batch_seconds: Histogram = field(default_factory=lambda: _histogram(
        "sluice_filter_batch_seconds", "time to screen one fetched batch (parse, score, sample)",
        BATCH_SECONDS_BUCKETS))  # fmt: skip

    def add(self, screened: Screened, records: int, seconds: float) -> None:
        """Count one screened batch of `records` records."""
        self.consumed += records
        self.events += screened.events
        self.flagged += screened.flagged
        self.audited += screened.audited
        self.first_sight += screened.first_sight
        self.by_verdict += screened.by_verdict
        self.held_back += screened.held_back
        self.dead += len(screened.dead)
        self.dead_by_kind.update(d.kind for d in screened.dead)
        self.otlp_records += screened.otlp_records
        self.joined += screened.joined
        self.exemplars += screened.exemplars
        self.telemetry_rows_dropped += screened.telemetry_rows_dropped
        self.otlp_items.update(
            {"logs": screened.otlp_logs, "traces": screened.spans, "metrics": screened.points}
        )
        self.ignored.update(screened.ignored)
        self.batch_seconds.observe(seconds)

    def note(self, verdicts: VerdictCache | None, first: FirstSight | None) -> None:
        """Take the verdict cache's and the first-sight budget's running figures."""
        if verdicts is not None:
            self.verdicts_held, self.verdicts_evicted = len(verdicts), verdicts.evicted
        if first is not None:
            self.first_sight_over_budget = first.over_budget
