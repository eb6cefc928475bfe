"""Ingest: records from files (`sources`) -> events, from JSON (`parsing`) or plain-text
lines in a known format (`formats`, detected and read by `textformats`), or dead letters with
the reason. Records that hold others are unpacked first (`unpack`): OTLP export requests from
the OpenTelemetry Collector (`otlp`, a decoder per signal) and shippers' envelopes
(`envelopes`: ECS, Fluent Bit, Vector, Docker, CRI).

Importing the package loads none of its modules (`stream._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.stream._lazy import lazy_names

if TYPE_CHECKING:
    from sluice.stream.errors import ParseError
    from sluice.stream.ingest.formats import (
        BUILTIN_FORMATS,
        LineFormat,
        TextHeader,
        TimeKind,
        grok,
        normalize_level,
    )
    from sluice.stream.ingest.parsing import ParsedBatch, parse_batch, parse_event
    from sluice.stream.ingest.sources import Format, Record, read_records
    from sluice.stream.ingest.textformats import TextFormats

__all__ = [
    "BUILTIN_FORMATS",
    "Format",
    "LineFormat",
    "ParseError",
    "ParsedBatch",
    "Record",
    "TextFormats",
    "TextHeader",
    "TimeKind",
    "grok",
    "normalize_level",
    "parse_batch",
    "parse_event",
    "read_records",
]

__getattr__, __dir__ = lazy_names(
    globals(),
    {
        "sluice.stream.ingest.sources": ["Format", "Record", "read_records"],
        "sluice.stream.ingest.parsing": ["ParseError", "ParsedBatch", "parse_batch", "parse_event"],
        "sluice.stream.ingest.formats": [
            "BUILTIN_FORMATS",
            "LineFormat",
            "TextHeader",
            "TimeKind",
            "grok",
            "normalize_level",
        ],
        "sluice.stream.ingest.textformats": ["TextFormats"],
    },
)
