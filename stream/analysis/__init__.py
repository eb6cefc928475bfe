"""The analysis stage: suspects -> event-time windows per scope -> analysis -> alerts, feedback.

`AnalysisState` (`machine`) is the stage as one state machine over a key-value store: a dict in
`scan`, a Faust table with a changelog topic in the worker, whose app `create_app` (`app`) builds
around it. Its parts: `windows`, `alerts`, `labels`, `state` (stored, versioned), `store`,
`triage` (new templates judged on first sight), `redaction` (what leaves for the LLM).
Importing this package loads none of its modules (Faust only with `create_app`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.stream._lazy import lazy_names

if TYPE_CHECKING:
    from sluice.stream.analysis.app import AnalysisProgress, create_app, open_windows
    from sluice.stream.analysis.effects import AnalysisCounters, Effects, Published
    from sluice.stream.analysis.machine import AnalysisState
    from sluice.stream.analysis.redaction import Redactor
    from sluice.stream.analysis.state import STATE_VERSION, ScopeState
    from sluice.stream.analysis.store import ChunkCache, MemoryStore, StagedStore, StateStore
    from sluice.stream.analysis.triage import NewTemplates
    from sluice.stream.analysis.windows import ClosedWindow, bundle_of

__all__ = [
    "STATE_VERSION",
    "AnalysisCounters",
    "AnalysisProgress",
    "AnalysisState",
    "ChunkCache",
    "ClosedWindow",
    "Effects",
    "MemoryStore",
    "NewTemplates",
    "Published",
    "Redactor",
    "ScopeState",
    "StagedStore",
    "StateStore",
    "bundle_of",
    "create_app",
    "open_windows",
]

__getattr__, __dir__ = lazy_names(
    globals(),
    {
        "sluice.stream.analysis.app": ["AnalysisProgress", "create_app", "open_windows"],
        "sluice.stream.analysis.effects": ["AnalysisCounters", "Effects", "Published"],
        "sluice.stream.analysis.machine": ["AnalysisState"],
        "sluice.stream.analysis.redaction": ["Redactor"],
        "sluice.stream.analysis.state": ["STATE_VERSION", "ScopeState"],
        "sluice.stream.analysis.store": ["ChunkCache", "MemoryStore", "StagedStore", "StateStore"],
        "sluice.stream.analysis.triage": ["NewTemplates"],
        "sluice.stream.analysis.windows": ["ClosedWindow", "bundle_of"],
    },
)
