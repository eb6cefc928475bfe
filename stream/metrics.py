"""The worker's Prometheus metrics, read from the live objects at scrape time.

A custom collector reads the filter stage's counters, the model watcher and the recall tally
when Prometheus scrapes, so the hot path keeps plain integer counters and pays nothing for
metrics. Served at `/metrics` on the worker's web port (`SLUICE_WORKER__WEB_PORT`).
`OutcomeWatcher` feeds the recall estimate: it reads the whole `outcomes` topic, as every
worker does, so each reports the estimate of every model version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from stream._settings import Settings
from stream.broker import open_assigned
from stream.recall import RecallTally
from stream.records import Outcome

if TYPE_CHECKING:
    from stream.filtering import StageCounters
    from stream.registry import ModelWatcher

__all__ = ["CONTENT_TYPE", "OutcomeWatcher", "WorkerMetrics"]

log = logging.getLogger(__name__)

#: Prometheus text exposition format 0.0.4 (the web server appends `; charset=utf-8`).
CONTENT_TYPE = "text/plain; version=0.0.4"


class OutcomeWatcher:
    """Folds every `outcomes` record into a RecallTally, from the beginning, until stopped."""

    def __init__(self, settings: Settings, tally: RecallTally) -> None:
        self._settings = settings
        self.tally = tally
        self._stopping = asyncio.Event()
        self.skipped = 0

    async def run(self) -> None:
        topic = self._settings.topics.outcomes
        consumer, _ends = await open_assigned(self._settings, topic, "sluice-outcomes")
        try:
            while not self._stopping.is_set():
                data = await consumer.getmany(timeout_ms=500, max_records=5000)
                for msgs in data.values():
                    for m in msgs:
                        try:
                            self.tally.add(Outcome.model_validate_json(m.value or b""))
                        except ValidationError:
                            self.skipped += 1
                            log.warning("%s:%d:%d is not an outcome record; skipped",
                                        m.topic, m.partition, m.offset)  # fmt: skip
        finally:
            await consumer.stop()

    def stop(self) -> None:
        self._stopping.set()


class WorkerMetrics:
    """A registry with one collector over the worker's live state; `render()` for a scrape."""

    def __init__(self, counters: StageCounters, watcher: ModelWatcher, tally: RecallTally) -> None:
        from prometheus_client import CollectorRegistry

        self._counters = counters
        self._watcher = watcher
        self._tally = tally
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self._counters
        for name, doc, value in (
            ("sluice_events_consumed", "events read from the events topic and parsed", c.events),
            ("sluice_events_flagged", "events the filter flagged", c.flagged),
            ("sluice_events_audit_sampled", "unflagged events sent as audit samples", c.audited),
            ("sluice_events_dead_lettered", "records sent to the dead letters", c.dead),
            ("sluice_filter_batches", "batches screened by the filter stage", c.batches),
            ("sluice_filter_model_swaps", "models swapped in without a restart", c.model_swaps),
            ("sluice_models_rejected", "models records rejected", self._watcher.rejected),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        info = GaugeMetricFamily(
            "sluice_filter_model_info", "the filter model in use (value 1)", labels=["version"]
        )
        info.add_metric([c.model_version], 1)
        yield info
        names = ("estimate", "low", "high")
        fams = {
            n: GaugeMetricFamily(
                "sluice_filter_recall_" + n,
                f"audit-based recall {n} per model version (95% interval)",
                labels=["version"],
            )
            for n in names
        }
        for version, est in self._tally.estimates().items():
            for n, v in zip(names, (est.recall, est.low, est.high), strict=True):
                if v is not None:
                    fams[n].add_metric([version], v)
        yield from fams.values()

    def render(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()
