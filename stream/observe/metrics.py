"""Sluice's Prometheus metrics, read from the live objects at scrape time.

A custom collector reads the filter stage's counters, the analysis stage's counters and the
analyst's usage when Prometheus scrapes, so the hot path keeps plain integer counters (counted
once per batch, not per event) and pays nothing for metrics. The worker adds consumer lag, the
model watcher and the recall tally, and serves them at `/metrics` on its web port
(`SLUICE_WORKER__WEB_PORT`); `sluice scan` prints the same counters at its end (`summary`).
`OutcomeWatcher` feeds the recall estimate: it reads the whole `outcomes` topic, as every
worker does, so each reports the estimate of every model version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sluice.stream.learning.recall import RecallTally

if TYPE_CHECKING:
    from sluice.models.analyst import Analyst
    from sluice.stream.analysis import AnalysisCounters, AnalysisProgress
    from sluice.stream.filtering.counters import StageCounters
    from sluice.stream.filtering.stage import FilterStage
    from sluice.stream.learning.registry import ModelWatcher


__all__ = ["CONTENT_TYPE", "PipelineMetrics", "WorkerProbes", "summary"]

log = logging.getLogger(__name__)

#: Prometheus text exposition format 0.0.4 (the web server appends `; charset=utf-8`).
CONTENT_TYPE = "text/plain; version=0.0.4"


@dataclass
class WorkerProbes:
    """What only a worker has: its stages' lag (a worker may run one of them: `worker.stages`),
    the model registry, the recall tally and the analysis table's open windows."""

    stage: FilterStage | None
    watcher: ModelWatcher | None
    tally: RecallTally
    open_windows: Callable[[], int]
    analysis: AnalysisProgress | None = None


class PipelineMetrics:
    """One registry with one collector over both stages' counters and the analyst's usage."""

    def __init__(
        self,
        stage: StageCounters,
        analysis: AnalysisCounters,
        analyst: Analyst,
        worker: WorkerProbes | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry

        self._stage = stage
        self._analysis = analysis
        self._analyst = analyst
        self._worker = worker
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Any]:
        yield from self._filter_stage()
        yield from self._analysis_stage()
        yield from self._llm()
        yield from self._wire()
        if self._worker is not None:
            yield from self._worker_only(self._worker)

    def _wire(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        from sluice.stream.records import RECORDS
        from sluice.stream.wire import WIRE

        fam = CounterMetricFamily(
            "sluice_wire_unknown_fields",
            "fields of records read that this release does not know (a newer release added "
            "them), dropped, by record kind",
            labels=["record"],
        )
        for record in sorted({*RECORDS, "analysis", "analysis-state", *WIRE.unknown_fields}):
            fam.add_metric([record], WIRE.unknown_fields[record])
        yield fam
        kinds = CounterMetricFamily(
            "sluice_wire_unknown_kinds",
            "records of a kind this release does not know (a newer release added it), skipped, "
            "by topic",
            labels=["topic"],
        )
        for topic in sorted({"suspects", "control", *WIRE.unknown_kinds}):
            kinds.add_metric([topic], WIRE.unknown_kinds[topic])
        yield kinds

    def _filter_stage(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self._stage
        for name, doc, value in (
            ("sluice_events_consumed", "records read from the events topic (or the file)",
             c.consumed),
            ("sluice_events_parsed", "records that became events (consumed - dead-lettered)",
             c.events),
            ("sluice_events_flagged", "events the filter flagged", c.flagged),
            ("sluice_events_unflagged", "events the filter did not flag (audit samples included)",
             c.events - c.flagged),
            ("sluice_events_audit_sampled", "unflagged events sent as audit samples (first "
             "sightings included)", c.audited),
            ("sluice_events_first_sight", "unflagged events forwarded on a first sighting of "
             "their template", c.first_sight),
            ("sluice_first_sight_over_budget", "first sightings drawn at the audit rate: the "
             "per-minute budget was spent", c.first_sight_over_budget),
            ("sluice_events_forwarded_by_verdict", "unflagged events forwarded: their template's "
             "verdict says relevant", c.by_verdict),
            ("sluice_events_held_back_by_verdict", "flagged events not forwarded: their "
             "template's verdict says not relevant", c.held_back),
            ("sluice_verdicts_evicted", "template verdicts dropped for the cap",
             c.verdicts_evicted),
            ("sluice_filter_batches", "batches screened by the filter stage", c.batches),
            ("sluice_lines_joined", "records joined to the line they continue (a stack trace's "
             "lines, one event)", c.joined),
            ("sluice_filter_model_swaps", "models swapped in without a restart", c.model_swaps),
        ):  # fmt: skip
            yield CounterMetricFamily(name, doc, value=value)
        otlp = CounterMetricFamily(
            "sluice_otlp_items",
            "OTLP items decoded: log records that became events, spans, metric points",
            labels=["signal"],
        )
        for signal in ("logs", "traces", "metrics"):
            otlp.add_metric([signal], c.otlp_items[signal])
        yield otlp
        yield CounterMetricFamily(
            "sluice_otlp_records", "records that were OTLP export requests", value=c.otlp_records
        )
        yield CounterMetricFamily(
            "sluice_span_exemplars",
            "spans forwarded as evidence: slow against their edge's or service's usual, or failed",
            value=c.exemplars,
        )
        yield CounterMetricFamily(
            "sluice_span_rows_dropped",
            "span and metric rows left out of a counts record (beyond 2,000 of a kind a batch)",
            value=c.telemetry_rows_dropped,
        )
        ignored = CounterMetricFamily(
            "sluice_event_fields_ignored",
            "service, host or level values of the wrong type (an object, list or number), "
            "never used as a name",
            labels=["field", "type"],
        )
        for (name, kind), n in sorted(c.ignored.items()):
            ignored.add_metric([name, kind], n)
        yield ignored
        dead = CounterMetricFamily(
            "sluice_events_dead_lettered",
            "records sent to the dead letters by the filter stage, by kind of reason",
            labels=["reason"],
        )
        for kind, n in sorted(c.dead_by_kind.items()):
            dead.add_metric([kind], n)
        yield dead
        yield from c.batch_seconds.collect()
        yield GaugeMetricFamily(
            "sluice_verdicts_held", "template verdicts the filter stage applies", c.verdicts_held
        )
        info = GaugeMetricFamily(
            "sluice_filter_model_info", "the filter model in use (value 1)", labels=["version"]
        )
        info.add_metric([c.model_version], 1)
        yield info

    def _analysis_stage(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        a = self._analysis
        yield CounterMetricFamily(
            "sluice_analysis_windows_opened", "event-time windows opened", value=a.windows_opened
        )
        open_now = (
            self._worker.open_windows()
            if self._worker is not None
            else a.windows_opened - sum(a.windows_closed.values())
        )
        yield GaugeMetricFamily(
            "sluice_analysis_windows_open", "windows open now (this worker's partitions)",
            value=open_now,
        )  # fmt: skip
        for name, doc, label, counts in (
            ("sluice_analysis_windows_closed", "windows closed, by what closed them", "reason",
             a.windows_closed),
            ("sluice_analysis_windows_analysed", "analyses published, by kind (llm, heuristic, "
             "degraded: the LLM failed and the heuristic answered)", "analysis",
             a.windows_analysed),
            ("sluice_alerts_published", "alert revisions published, by severity", "severity",
             a.alerts),
        ):  # fmt: skip
            fam = CounterMetricFamily(name, doc, labels=[label])
            for key, n in sorted(counts.items()):
                fam.add_metric([key], n)
            yield fam
        yield CounterMetricFamily(
            "sluice_analysis_windows_given_up",
            "windows whose analysis failed max_analysis_failures times (dead letters)",
            value=a.windows_given_up,
        )
        tr = a.triage
        for name, doc, value in (
            ("sluice_triage_calls", "triage calls on new templates", tr.calls),
            ("sluice_triage_failed_calls", "triage calls that brought no verdicts",
             tr.failed_calls),
            ("sluice_triage_templates", "new templates sent to triage", tr.templates),
            ("sluice_triage_prompt_tokens", "prompt tokens of triage calls", tr.prompt_tokens),
        ):  # fmt: skip
            yield CounterMetricFamily(name, doc, value=value)

    def _llm(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, StateSetMetricFamily

        from sluice.models.analyst import OpenAIAnalyst, UsageTotals

        llm = self._analyst if isinstance(self._analyst, OpenAIAnalyst) else None
        u = llm.usage if llm is not None else UsageTotals()
        for name, doc, value in (
            ("sluice_llm_calls", "requests sent to the LLM endpoint", u.calls),
            ("sluice_llm_retries", "requests retried after a failure", u.retries),
            ("sluice_llm_failures", "analyses whose LLM calls all failed", u.failures),
            ("sluice_llm_degraded", "analyses answered by the heuristic fallback", u.degraded),
            ("sluice_llm_repairs", "answers repaired after a schema violation", u.repairs),
            ("sluice_llm_ungrounded", "answers naming services, edges or templates the bundle "
             "does not hold, after their repair (the ranking's report instead)", u.ungrounded),
            (
                "sluice_llm_format_rejections",
                "requests whose structured-output mode the endpoint refused (auto: then the next)",
                u.format_rejections,
            ),
            ("sluice_llm_prompt_tokens", "prompt tokens billed", u.prompt_tokens),
            ("sluice_llm_completion_tokens", "completion tokens billed", u.completion_tokens),
            ("sluice_llm_cost_dollars", "LLM spend in US dollars at the configured prices",
             u.cost_usd),
        ):  # fmt: skip
            yield CounterMetricFamily(name, doc, value=value)
        yield from u.call_seconds.collect()
        state = llm.breaker.state if llm is not None else "closed"
        yield StateSetMetricFamily(
            "sluice_llm_circuit_breaker",
            "the LLM circuit breaker's state (open: calls are not sent)",
            value={s: s == state for s in ("closed", "open", "half_open")},
        )

    def _worker_only(self, w: WorkerProbes) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if w.watcher is not None:
            yield CounterMetricFamily(
                "sluice_models_rejected", "models records rejected", value=w.watcher.rejected
            )
        if w.stage is not None:
            yield from _progress(
                w.stage, "sluice_consumer_lag", "sluice_filter_stalled_seconds",
                "records not yet committed by the filter stage, per assigned partition",
            )  # fmt: skip
        if w.analysis is not None:
            yield from _progress(
                w.analysis, "sluice_analysis_lag", "sluice_analysis_stalled_seconds",
                "records of suspects after the last one the analysis stage handled, per "
                "assigned partition",
            )  # fmt: skip
        names = ("estimate", "low", "high")
        fams = {
            n: GaugeMetricFamily(
                "sluice_filter_recall_" + n,
                f"audit-based recall {n} per model version (95% interval)",
                labels=["version"],
            )
            for n in names
        }
        for version, est in w.tally.estimates().items():
            for n, v in zip(names, (est.recall, est.low, est.high), strict=True):
                if v is not None:
                    fams[n].add_metric([version], v)
        yield from fams.values()

    def render(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()


def _progress(stage: Any, lag_name: str, stalled_name: str, doc: str) -> Iterator[Any]:
    """A stage's lag per partition and its stalled seconds."""
    from prometheus_client.core import GaugeMetricFamily

    lag = GaugeMetricFamily(lag_name, doc, labels=["topic", "partition"])
    for (topic, partition), behind in sorted(stage.lag().items()):
        lag.add_metric([topic, str(partition)], behind)
    yield lag
    yield GaugeMetricFamily(
        stalled_name,
        "seconds with lag and no progress (/healthz fails past worker.stall_timeout_s)",
        value=stage.stalled_s(),
    )


def summary(metrics: PipelineMetrics) -> list[str]:
    """The metrics as `name{labels} value` lines, histograms as count and sum (`sluice scan`)."""
    lines = []
    for fam in metrics.registry.collect():
        for s in fam.samples:
            if s.name.endswith(("_bucket", "_created")):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
            value = f"{s.value:.6g}" if isinstance(s.value, float) and not s.value.is_integer() \
                else f"{int(s.value)}"  # fmt: skip
            lines.append(f"{s.name}{{{labels}}} {value}" if labels else f"{s.name} {value}")
    return lines
