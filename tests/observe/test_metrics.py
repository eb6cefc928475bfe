"""Metrics and health, pure: counters that add up, bounded dead-letter kinds, the names that
`sluice scan` prints are the worker's, and what /healthz and /readyz decide."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sluice.models.analyst import HeuristicAnalyst
from sluice.models.filter import KeywordFilter
from sluice.stream import PipelineSettings, Settings
from sluice.stream.analysis import AnalysisCounters
from sluice.stream.filtering.counters import StageCounters
from sluice.stream.filtering.stage import FilterStage
from sluice.stream.learning.recall import RecallTally
from sluice.stream.learning.registry import ModelWatcher
from sluice.stream.observe.metrics import PipelineMetrics, WorkerProbes, summary
from sluice.stream.records import dead_letter_kind
from sluice.stream.scan import ScanResult, scan
from sluice.stream.worker import Health
from tests.support.hostile import corpus

CFG = PipelineSettings(audit_rate=0.2, idle_close_s=1)
LINES = [
    b'{"ts": "2024-06-01T08:00:%02dZ", "service": "pay", "message": "ERROR payment failed"}' % i
    for i in range(30)
] + [b"2024-06-01 08:00:%02d INFO cart checked out" % i for i in range(50)]


def _scan(values: list[bytes]) -> ScanResult:
    records = [(v, None, f"file:{i + 1}") for i, v in enumerate(values)]
    filt = KeywordFilter(["ERROR"])
    return asyncio.run(
        scan(records, CFG, filt, HeuristicAnalyst(), lambda: datetime(2024, 6, 1, tzinfo=UTC))
    )


def test_every_corpus_dead_letter_has_a_named_kind() -> None:
    hostile = [h.raw for h in corpus()]
    result = _scan(hostile)
    assert result.deadletters, "the corpus has dead letters"
    kinds = {d.kind for d in result.deadletters}
    assert "other" not in kinds, [d.reason for d in result.deadletters if d.kind == "other"]
    assert dead_letter_kind("something new") == "other"


def test_scan_counters_account_for_every_record() -> None:
    hostile = [h.raw for h in corpus()]
    result = _scan(LINES + hostile)
    c = result.counters
    assert c.consumed == len(LINES) + len(hostile)
    assert c.consumed == c.events + c.dead
    assert c.dead == len(result.deadletters) == sum(c.dead_by_kind.values())
    assert c.flagged + c.audited == result.suspects
    assert c.flagged >= 30  # every ERROR line
    assert c.batches == 1


def test_scan_analysis_counters_match_what_was_published() -> None:
    result = _scan(LINES)
    a = result.analysis
    assert a.windows_opened == sum(a.windows_closed.values()) >= 1  # all closed at the end
    assert sum(a.windows_analysed.values()) == result.windows
    assert sum(a.alerts.values()) == len(result.alerts) >= 1
    assert set(a.alerts) == {x.report.severity for x in result.alerts}


def _families(metrics: PipelineMetrics) -> set[str]:
    return {fam.name for fam in metrics.registry.collect()}


def test_scan_prints_the_names_a_worker_exports() -> None:
    result = _scan(LINES)
    analyst = HeuristicAnalyst()
    scanned = PipelineMetrics(result.counters, result.analysis, analyst)
    settings = Settings()
    stage = FilterStage(settings, KeywordFilter(["ERROR"]))  # no Kafka until run()
    watcher = ModelWatcher(settings, lambda _m, _a: None, asyncio.Event())
    probes = WorkerProbes(stage, watcher, RecallTally(), lambda: 0)
    worker = PipelineMetrics(stage.counters, AnalysisCounters(), analyst, probes)
    assert _families(scanned) <= _families(worker), _families(scanned) - _families(worker)
    assert _families(worker) - _families(scanned) == {
        "sluice_models_rejected",
        "sluice_consumer_lag",
        "sluice_filter_stalled_seconds",
        "sluice_filter_recall_estimate",
        "sluice_filter_recall_low",
        "sluice_filter_recall_high",
    }
    printed = summary(scanned)
    assert f"sluice_events_consumed_total {len(LINES)}" in printed
    assert 'sluice_analysis_windows_closed_total{reason="end"} 1' in printed
    assert all(line.split("{")[0].split(" ")[0].startswith(tuple(_families(scanned)))
               for line in printed)  # fmt: skip


def test_metric_values_are_the_counters() -> None:
    c = StageCounters(consumed=10, events=7, flagged=3, audited=1, dead=3, model_version="v1")
    c.dead_by_kind.update({"invalid_json": 2, "empty": 1})
    c.batch_seconds.observe(0.02)
    a = AnalysisCounters(windows_opened=2)
    a.windows_closed["idle"] += 1
    text = PipelineMetrics(c, a, HeuristicAnalyst()).render()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert samples[("sluice_events_consumed_total", ())] == 10
    assert samples[("sluice_events_parsed_total", ())] == 7
    assert samples[("sluice_events_unflagged_total", ())] == 4
    assert samples[("sluice_events_dead_lettered_total", (("reason", "invalid_json"),))] == 2
    assert samples[("sluice_filter_batch_seconds_count", ())] == 1
    assert samples[("sluice_filter_model_info", (("version", "v1"),))] == 1
    assert samples[("sluice_analysis_windows_open", ())] == 1  # scan: opened - closed
    state = ("sluice_llm_circuit_breaker", (("sluice_llm_circuit_breaker", "closed"),))
    assert samples[state] == 1


@dataclass
class _Stage:
    """A filter stage's health-facing side, as a test double."""

    behind: int = 0
    stalled: float = 0.0
    joined: bool = False
    model_loaded: bool = False
    counters: StageCounters = field(default_factory=lambda: StageCounters(model_version="v9"))

    def lag(self) -> dict[tuple[str, int], int]:
        return {("events", 0): self.behind}

    def stalled_s(self) -> float:
        return self.stalled


def test_liveness_fails_only_with_lag_and_no_progress_past_the_timeout() -> None:
    stage: Any = _Stage()
    health = Health(stage, stall_timeout_s=30)
    assert health.live() == (True, "ok: lag 0")
    stage.behind, stage.stalled = 500, 29.0
    assert health.live()[0]
    stage.stalled = 31.0
    ok, text = health.live()
    assert not ok and "lag 500" in text and "31 s" in text


def test_readiness_needs_partitions_and_the_model() -> None:
    stage: Any = _Stage()
    health = Health(stage, stall_timeout_s=30)
    assert health.ready() == (False, "not ready: no partitions assigned yet")
    stage.joined = True
    assert not health.ready()[0]
    stage.model_loaded = True
    assert health.ready() == (True, "ready: model v9")


def test_liveness_judges_each_stage_and_names_the_one_stalled() -> None:
    stage: Any = _Stage()
    analysis: Any = _Stage()
    health = Health(stage, stall_timeout_s=30, analysis=analysis)
    assert health.live() == (True, "ok: lag 0; analysis lag 0")
    analysis.behind, analysis.stalled = 7, 31.0
    ok, text = health.live()
    assert not ok and text == "stalled: analysis lag 7 and no record handled for 31 s"
    alone = Health(None, stall_timeout_s=30, analysis=analysis)
    assert not alone.live()[0]
    analysis.stalled = 0.0
    assert alone.live() == (True, "ok: analysis lag 7")


def test_a_worker_of_the_analysis_stage_alone_is_ready_once_it_joined() -> None:
    analysis: Any = _Stage()
    health = Health(None, stall_timeout_s=30, analysis=analysis)
    assert health.ready() == (False, "not ready: no partitions assigned yet")
    analysis.joined = True
    assert health.ready() == (True, "ready: the analysis stage")
