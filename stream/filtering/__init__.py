"""The filter stage: events -> suspects. `screen` is its logic on one batch (shared by scan
and worker), `stage` the worker's loop on aiokafka, `verdicts` the LLM's per-template verdicts
and first sightings that overrule the model.

Importing the package loads none of its modules (`stream._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.stream._lazy import lazy_names

if TYPE_CHECKING:
    from sluice.stream.errors import FilterStageError
    from sluice.stream.filtering.counters import StageCounters
    from sluice.stream.filtering.screen import (
        MAX_SUSPECTS_MESSAGE_BYTES,
        Screened,
        audit_draws,
        build_filter,
        screen_batch,
    )
    from sluice.stream.filtering.stage import FilterStage
    from sluice.stream.filtering.verdicts import Decision, FirstSight, Verdict, VerdictCache, decide

__all__ = [
    "MAX_SUSPECTS_MESSAGE_BYTES",
    "Decision",
    "FilterStage",
    "FilterStageError",
    "FirstSight",
    "Screened",
    "StageCounters",
    "Verdict",
    "VerdictCache",
    "audit_draws",
    "build_filter",
    "decide",
    "screen_batch",
]

__getattr__, __dir__ = lazy_names(
    globals(),
    {
        "sluice.stream.filtering.screen": [
            "MAX_SUSPECTS_MESSAGE_BYTES",
            "Screened",
            "audit_draws",
            "build_filter",
            "screen_batch",
        ],
        "sluice.stream.filtering.counters": ["StageCounters"],
        "sluice.stream.filtering.stage": ["FilterStage", "FilterStageError"],
        "sluice.stream.filtering.verdicts": [
            "Decision",
            "FirstSight",
            "Verdict",
            "VerdictCache",
            "decide",
        ],
    },
)
