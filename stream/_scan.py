"""`sluice scan`: the pipeline in-process on a file, with no broker."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from models.analyst import Analyst
from models.filter import Filter
from stream._parse import ParseError, parse_event
from stream._pipeline import AlertBook, ClosedWindow, WindowCollector, analyse_window, screen
from stream._records import Alert, DeadLetter, Event, Feedback
from stream._settings import PipelineSettings
from stream._sources import Record

__all__ = ["ScanResult", "scan"]


@dataclass
class ScanResult:
    events: int = 0
    suspects: int = 0
    windows: int = 0
    alerts: list[Alert] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    deadletters: list[DeadLetter] = field(default_factory=list)


async def scan(
    records: Iterable[Record],
    cfg: PipelineSettings,
    filt: Filter,
    analyst: Analyst,
    now: Callable[[], datetime],
    on_alert: Callable[[Alert], None] | None = None,
    wall: Callable[[], float] = time.monotonic,
) -> ScanResult:
    """parse -> screen -> windows -> analyse over records; alerts go to on_alert as they come."""
    result = ScanResult()
    collector = WindowCollector(cfg, wall)
    book = AlertBook()

    async def close(windows: list[ClosedWindow]) -> None:
        for w in windows:
            alerts, feedback, _ = await analyse_window(w, analyst, book, cfg, now)
            result.windows += 1
            result.feedback += feedback
            for a in alerts:
                result.alerts.append(a)
                if on_alert:
                    on_alert(a)

    it = iter(records)
    while batch := list(itertools.islice(it, cfg.batch_size)):
        events: list[Event] = []
        for value, key, source in batch:
            try:
                events.append(
                    parse_event(value, key, cfg.default_service, cfg.max_event_bytes, source)
                )
            except ParseError as exc:
                result.deadletters.append(DeadLetter.of(value, source, None, None, str(exc)))
        result.events += len(events)
        suspects = screen(events, filt, cfg)
        result.suspects += len(suspects)
        for s in suspects:
            await close(collector.add(s))
    await close(collector.close_all())
    return result
