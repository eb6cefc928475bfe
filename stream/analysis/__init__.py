"""The analysis stage: suspects -> event-time windows per scope -> analysis -> alerts, feedback.

`AnalysisState` is the stage's logic over a key-value store (a dict in `scan`, a Faust table with
a changelog topic in the worker); `create_app` builds the worker's Faust app around it. Importing
this package does not import Faust: `create_app` loads it when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sluice.stream.analysis.machine import (
    AnalysisCounters,
    AnalysisState,
    ChunkCache,
    ClosedWindow,
    MemoryStore,
    Published,
    StagedStore,
    StateStore,
    bundle_of,
)

if TYPE_CHECKING:
    from sluice.stream.analysis.app import create_app, open_windows

__all__ = [
    "AnalysisCounters",
    "AnalysisState",
    "ChunkCache",
    "ClosedWindow",
    "MemoryStore",
    "Published",
    "StagedStore",
    "StateStore",
    "bundle_of",
    "create_app",
    "open_windows",
]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "open_windows"):
        from sluice.stream.analysis import _app

        return getattr(_app, name)
    raise AttributeError(name)
