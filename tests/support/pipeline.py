"""Records and runs of the pipeline's stages that several tests build on."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sluice.models.analyst import HeuristicAnalyst
from sluice.models.filter import KeywordFilter, OnnxFilter
from sluice.stream import PipelineSettings
from sluice.stream.analysis import AnalysisState, ClosedWindow, bundle_of
from sluice.stream.filtering.screen import screen_batch
from sluice.stream.ingest.sources import read_records
from sluice.stream.records import (
    Alert,
    Event,
    Feedback,
    Suspect,
    SuspectBatch,
    parse_suspects_record,
)
from sluice.stream.scan import ScanResult, scan

T0 = datetime(2023, 1, 29, 8, 52, tzinfo=UTC)


DEMO = (
    Path(__file__).resolve().parents[2] / "stream" / "demo" / "trainticket-contacts-fault.jsonl.gz"
)


def ev(i: int, text: str = "ERROR boom", service: str = "a", sec: float = 0) -> Event:
    return Event(
        ts=T0 + timedelta(seconds=sec),
        service=service,
        level=text.split()[0],
        message=f"{text} {i}",
    )


def screen(values: list[bytes], cfg: PipelineSettings, keywords: list[str]) -> list[Suspect]:
    out = screen_batch(
        values, [None] * len(values), lambda i: (f"t:{i}", None, None), KeywordFilter(keywords), cfg
    )
    assert not out.dead
    recs = [parse_suspects_record(m) for ms in out.messages.values() for m in ms]
    return [s for r in recs if isinstance(r, SuspectBatch) for s in r.suspects]


def suspect(sec: float, scope: str = "s", text: str = "ERROR x", audit: bool = False) -> Suspect:
    return Suspect(
        event=ev(int(sec), text, sec=sec),
        score=0.9,
        model_version="m",
        audit=audit,
        sampling_probability=0.01 if audit else 1.0,
        scope=scope,
    )


def closed_windows(state: AnalysisState, scope: str) -> list[ClosedWindow]:
    return [state.window(scope, seq) for seq, _ in state.due(scope, ignore_wait=True)]


def window_events(i: int) -> list[Suspect]:
    def one(service: str, text: str, ms: int) -> Suspect:
        return Suspect(
            event=Event(
                ts=T0 + timedelta(seconds=i, milliseconds=ms),
                service=service,
                level="ERROR",
                message=f"{text} {i}",
                trace_id=f"t{i}",
            ),
            score=0.9,
            model_version="m",
            audit=False,
            sampling_probability=1,
            scope="s",
        )

    return [one("db", "ERROR db timeout", 0), one("api", "ERROR db call failed", 5)]


async def analyse_all(state: AnalysisState, scope: str) -> tuple[list[Alert], list[Feedback]]:
    for w in closed_windows(state, scope):
        analysis = await HeuristicAnalyst().analyze(bundle_of(w))
        state.on_analysed(w.analysed(analysis, datetime.now(UTC)))
    out = state.publish(scope)
    return out.alerts, out.feedback


def scan_demo(cfg: PipelineSettings) -> ScanResult:
    """`sluice scan --demo` as a function: the shipped filter, the offline analyst."""
    return asyncio.run(
        scan(
            read_records(str(DEMO)),
            cfg,
            OnnxFilter(),
            HeuristicAnalyst(),
            lambda: datetime.now(UTC),
        )
    )
