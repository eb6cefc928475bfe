"""`sluice scan`: the pipeline in-process on a file, with no broker.

The same two stages as the worker, with the same code: `screen_batch` (the filter stage) turns
each batch into the same `suspects` messages the worker produces, and `AnalysisState.apply`
(the analysis stage) takes those very bytes, as the worker's agent does, over a dict instead of
a Faust table. Windows are analysed as they close, and
at the end of the input every open window closes. The verdicts of each analysed window apply to
the batches after it, as a worker's verdict follower applies them from `feedback`; so do the
triage verdicts on the first sightings of new templates (`stream.analysis._triage`).

A scan does not wait out an LLM outage as a worker does: once a call finds the endpoint down
(after its own retries), the analyst stays offline and the rest of the input gets degraded
reports at once, said in one line (`ScanResult.notes`, and `notify`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sluice.models.analyst import Analyst, Remote
from sluice.models.filter import Filter
from sluice.stream.analysis import (
    AnalysisCounters,
    AnalysisState,
    MemoryStore,
    Published,
    bundle_of,
)
from sluice.stream.analysis.triage import NewTemplates
from sluice.stream.filtering.counters import StageCounters
from sluice.stream.filtering.screen import screen_batch
from sluice.stream.filtering.verdicts import FirstSight, VerdictCache
from sluice.stream.ingest.multiline import ends_event
from sluice.stream.ingest.sources import Record
from sluice.stream.ingest.textformats import TextFormats
from sluice.stream.records import (
    Alert,
    DeadLetter,
    Feedback,
    Outcome,
    SuspectBatch,
)
from sluice.stream.settings import PipelineSettings
from sluice.stream.signals.counter import SignalCounter
from sluice.stream.signals.spans import TelemetryFolder

__all__ = ["ScanResult", "scan"]


@dataclass
class ScanResult:
    """What the scan produced; `counters` and `analysis` are the worker's metrics counters."""

    counters: StageCounters
    analysis: AnalysisCounters
    events: int = 0
    suspects: int = 0
    windows: int = 0
    alerts: list[Alert] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    deadletters: list[DeadLetter] = field(default_factory=list)
    #: each forwarded event: its source (file:line) and why it was forwarded (`Suspect.reason`,
    #: or `exemplar` for an event written of a span)
    forwarded: list[tuple[str, str]] = field(default_factory=list)
    #: what the scan decided on its own (the LLM found down: the rest analysed offline)
    notes: list[str] = field(default_factory=list)


def _batches(records: Iterable[Record], size: int, max_lines: int) -> Iterator[list[Record]]:
    """Batches of about `size` records, never cut inside a multi-line event of up to
    `max_lines` records (a stack trace the filter stage joins: `ingest.multiline`; 0: any)."""
    batch: list[Record] = []
    for rec in records:
        if len(batch) >= size and (
            len(batch) >= size + max_lines or ends_event(batch[-1][0], rec[0])
        ):
            yield batch
            batch = []
        batch.append(rec)
    if batch:
        yield batch


async def scan(
    records: Iterable[Record],
    cfg: PipelineSettings,
    filt: Filter,
    analyst: Analyst,
    now: Callable[[], datetime],
    on_alert: Callable[[Alert], None] | None = None,
    wall: Callable[[], float] = time.time,
    verdicts: VerdictCache | None = None,
    first: FirstSight | None = None,
    notify: Callable[[str], None] | None = None,
    text: TextFormats | None = None,
) -> ScanResult:
    """parse -> screen -> windows -> analyse over records; alerts go to on_alert as they come.

    `verdicts` and `first` carry what earlier scans learnt (a benchmark's rounds); by default
    each scan starts with none, as the settings say. `text` reads the headers of text lines
    (by default as the settings say, the year of times without one taken from now: the CLI
    gives the file's modification time, and the file's name as the service of last resort)."""
    counters = AnalysisCounters()
    triage = NewTemplates(cfg, counters=counters.triage)
    state = AnalysisState(cfg, MemoryStore(), wall, "scan", triage=triage, counters=counters)
    result = ScanResult(StageCounters(model_version=filt.version), counters)

    if text is None:
        text = cfg.text.formats()
    fs = cfg.first_sight
    if verdicts is None and fs.verdicts:
        verdicts = VerdictCache(fs.max_verdicts)
    if first is None and fs.enabled:
        first = FirstSight(fs)

    def offline_if_down() -> None:
        if isinstance(analyst, Remote) and analyst.is_down() and not result.notes:
            analyst.stay_offline()
            note = (
                f"the LLM endpoint is down ({analyst.name} analyst): the rest of the input is "
                "analysed offline at once (degraded reports, no more calls)"
            )
            result.notes.append(note)
            if notify:
                notify(note)

    def take(out: Published) -> None:
        result.windows += out.windows
        result.feedback += out.feedback
        if verdicts is not None:  # as a worker follows `feedback`: later batches use them
            for f in out.feedback:
                verdicts.apply(f)
        result.outcomes += out.outcomes
        result.deadletters += out.dead
        for a in out.alerts:
            result.alerts.append(a)
            if on_alert:
                on_alert(a)

    async def analyse(scope: str, *, final: bool = False) -> None:
        while due := state.due(scope, ignore_wait=final):
            for seq, _attempt in due:
                w = state.window(scope, seq)
                analysis = await analyst.analyze(bundle_of(w))
                offline_if_down()
                take(state.apply(0, None, w.analysed(analysis, now()).to_bytes()))
            if not final:
                break

    counter = SignalCounter(cfg.signals.bucket_s, cfg.signals.trace_ttl_s)  # across batches
    folder = TelemetryFolder(cfg.signals.bucket_s, max_keys=cfg.signals.max_keys)
    for batch in _batches(records, cfg.batch_size, cfg.text.max_lines if cfg.text.multiline else 0):
        started = time.perf_counter()
        screened = screen_batch(
            [r[0] for r in batch],
            [r[1] for r in batch],
            lambda i, b=batch: (b[i][2], None, None),  # type: ignore[misc]
            filt,
            cfg,
            counter=counter,
            verdicts=verdicts,
            first=first,
            text=text,
            telemetry=folder,
        )
        result.counters.add(screened, len(batch), time.perf_counter() - started)
        result.counters.note(verdicts, first)
        result.counters.batches += 1
        result.events += screened.events
        result.suspects += screened.flagged + screened.audited
        result.deadletters += screened.dead
        for _scope, counts in screened.counts:  # signals: every event counted, as a worker does
            take(state.apply(0, None, counts))
        for messages in screened.messages.values():
            for m in messages:  # the very bytes a worker would put on the suspects topic
                effects = state.apply(0, None, m)
                take(effects)
                rec = effects.record
                assert isinstance(rec, SuspectBatch)
                result.forwarded += [
                    (s.event.source or "", "exemplar" if s.exemplar else s.reason)
                    for s in rec.suspects
                ]
                judged = await triage.judge(analyst, now)  # a worker's triage runs concurrently
                offline_if_down()
                result.feedback += judged
                if verdicts is not None:
                    for f in judged:
                        verdicts.apply(f)
                await analyse(rec.scope)
    for scope in state.scopes(0):
        state.close_all(scope)
        await analyse(scope, final=True)
    return result
