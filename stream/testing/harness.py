"""`scan_lines`: the whole pipeline on a list of log lines, in-process, in one call, for tests of
one's own formats, patterns, filters and settings: the same code as `sluice scan` and a worker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from sluice.models.analyst import Analyst, HeuristicAnalyst
from sluice.models.filter import Filter, KeywordFilter
from sluice.stream.scan import ScanResult, scan
from sluice.stream.settings import PipelineSettings

__all__ = ["scan_lines"]


def scan_lines(
    lines: Sequence[str | bytes],
    cfg: PipelineSettings | None = None,
    *,
    filt: Filter | None = None,
    analyst: Analyst | None = None,
    source: str = "lines",
) -> ScanResult:
    """Scan `lines` (JSON events or plain-text lines) as `sluice scan` scans a file called
    `source`. By default the keyword filter (`KeywordFilter`: no model to load) and the
    offline heuristic analyst (no LLM): alerts, feedback and dead letters as the pipeline
    makes them. Pass the real `OnnxFilter` or an `OpenAIAnalyst` (a `FakeLLM` endpoint) to
    test those instead."""
    cfg = cfg or PipelineSettings()
    records = [
        (line.encode() if isinstance(line, str) else line, None, f"{source}:{i + 1}")
        for i, line in enumerate(lines)
    ]
    analyst = analyst or HeuristicAnalyst()
    return asyncio.run(
        scan(records, cfg, filt or KeywordFilter(), analyst, lambda: datetime.now(UTC))
    )
