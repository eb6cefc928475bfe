"""Test doubles for users' own tests of Sluice, beside the real parts they stand in for:

- `MemoryStore`   the analysis state in a dict (the worker's is a Faust table)
- `RecordingSink` an alert sink that keeps what it is given, failing its first N deliveries
- `KeywordFilter` a filter that flags lines with given words (no model to load)
- `FakeLLM`       an OpenAI-compatible HTTP server with scripted answers and failures, for the
  real `openai` client (`OpenAIAnalyst`) to talk to
- `scan_lines`    the whole pipeline on a list of lines, in-process (as `sluice scan`)

Sluice's own tests use them too. Importing this package loads none of them until used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.stream._lazy import lazy_names

if TYPE_CHECKING:
    from sluice.models.filter import KeywordFilter
    from sluice.stream.analysis.store import MemoryStore
    from sluice.stream.delivery.sinks import RecordingSink
    from sluice.stream.testing.harness import scan_lines
    from sluice.stream.testing.llm import FakeLLM

__all__ = ["FakeLLM", "KeywordFilter", "MemoryStore", "RecordingSink", "scan_lines"]

__getattr__, __dir__ = lazy_names(
    globals(),
    {
        "sluice.models.filter": ["KeywordFilter"],
        "sluice.stream.analysis.store": ["MemoryStore"],
        "sluice.stream.delivery.sinks": ["RecordingSink"],
        "sluice.stream.testing.harness": ["scan_lines"],
        "sluice.stream.testing.llm": ["FakeLLM"],
    },
)
