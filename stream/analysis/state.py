"""The analysis stage's stored state: typed, and versioned so that an upgrade can read it.

Every value in the store (a Faust table with a changelog topic in the worker) is a JSON object
with its state version in `"v"`: a scope (`scope/<scope>`: open and pending windows, firing
alerts, revision counters), a chunk of a window's suspects (`chunk/<scope>/<n>`), a partition's
live scopes and last applied offset (`part/<p>`). The signal detector (`signals/<scope>`) has a
codec of its own (`signals.codec`), versioned alike.

Version 1 is what releases before the version was written stored: no `"v"`, alerts and analyses
as JSON strings inside the JSON, chunks as bare lists. This release reads version 1 and 2 and
writes 2; a value of a newer version raises `StateVersionError` (the worker dead-letters the
record that needed it and goes on), so a rolled-back worker never misreads a newer one's state.
Optional fields a later release added within this version are dropped when read and counted, as
for wire records (`records.read_record`): added fields need no new version, retyped ones do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from sluice.models.analyst import Analysis, EdgeLatency, Signal
from sluice.stream.errors import RecordError, StateError, StateVersionError
from sluice.stream.records import Alert, Suspect, read_record

__all__ = [
    "STATE_VERSION",
    "CloseReason",
    "OpenWindow",
    "PartitionState",
    "PendingWindow",
    "ScopeState",
    "dump_chunk",
    "dump_state",
    "load_chunk",
    "load_partition",
    "load_scope",
]

#: The layout this release writes; it reads this one and every earlier one.
STATE_VERSION = 2

CloseReason = Literal["watermark", "full", "idle", "end"]
_CLOSE_REASONS: tuple[CloseReason, ...] = ("watermark", "full", "idle", "end")
_SUSPECTS: TypeAdapter[list[Suspect]] = TypeAdapter(list[Suspect])


class _Stored(BaseModel):
    model_config = ConfigDict(extra="forbid")

    v: int = STATE_VERSION


class OpenWindow(BaseModel):
    """A window still taking events; its suspects are in `chunks`."""

    model_config = ConfigDict(extra="forbid")

    start: datetime
    chunks: list[str] = Field(default_factory=list)
    n: int = 0
    touched: float = 0.0  # wall clock (epoch seconds) of the last event
    late: bool = False  # reopened by late events: closes on idle or at the end only


class PendingWindow(BaseModel):
    """A closed window waiting for its analysis and its turn to be published."""

    model_config = ConfigDict(extra="forbid")

    seq: int
    start: datetime
    end: datetime
    reason: CloseReason
    chunks: list[str]
    n: int
    attempt: int = 0
    failures: int = 0
    not_before: float = 0.0
    result: Analysis | None = None  # once it is known
    done_at: datetime | None = None
    given_up: str | None = None  # why, after max_analysis_failures: published as a dead letter
    signals: list[Signal] | None = None  # at close, when signals are enabled (the lines')
    # at close: spans' and metrics' signals, a field of their own: their kinds are new to the
    # release before, which drops this field (and reads the window) rather than refuse it
    telemetry: list[Signal] = Field(default_factory=list)
    latencies: list[EdgeLatency] = Field(default_factory=list)  # at close, likewise


class ScopeState(_Stored):
    watermark: datetime | None = None
    open: list[OpenWindow] = Field(default_factory=list)
    pending: list[PendingWindow] = Field(default_factory=list)
    next_seq: int = 0
    next_chunk: int = 0
    revisions: dict[str, int] = Field(default_factory=dict)
    firing: dict[str, Alert] = Field(default_factory=dict)  # fingerprint -> latest revision
    firing_at: dict[str, float] = Field(default_factory=dict)  # fingerprint -> wall time raised
    firing_since: dict[str, float] = Field(default_factory=dict)  # fingerprint -> episode start
    touched: float = 0.0


class PartitionState(_Stored):
    scopes: list[str] = Field(default_factory=list)
    applied: int = -1


class _Chunk(_Stored):
    suspects: list[Suspect]


_M = TypeVar("_M", bound=_Stored)
_CURRENT = b'{"v":%d,' % STATE_VERSION  # `v` is the first field of every stored model


def dump_state(value: _Stored) -> bytes:
    return value.model_dump_json().encode()


def _load(model: type[_M], key: str, raw: bytes, upgrade: Any = None) -> _M:
    if raw.startswith(_CURRENT):  # this version: fields a later release added are dropped
        try:
            return read_record(model, raw, "analysis-state")
        except RecordError as exc:
            raise StateError(key, f"unreadable: {exc}") from exc
    try:
        x = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise StateError(key, f"not JSON ({exc})") from exc
    version = x.get("v", 1) if isinstance(x, dict) else 1
    if not isinstance(version, int) or version > STATE_VERSION:
        raise StateVersionError(key, version if isinstance(version, int) else -1, STATE_VERSION)
    if version == 1 and upgrade is not None:
        x = upgrade(x)
    try:
        return model.model_validate({**x, "v": STATE_VERSION})
    except ValidationError as exc:
        raise StateError(key, f"unreadable: {exc.errors()[0]['msg']}") from exc


def _scope_v1(x: dict[str, Any]) -> dict[str, Any]:
    """Version 1: alerts and analyses were JSON strings; a given-up window's reason said why."""
    x["firing"] = {fp: orjson.loads(a) for fp, a in x.get("firing", {}).items()}
    for p in x.get("pending", []):
        if p.get("result") is not None:
            p["result"] = orjson.loads(p["result"])
        if p.pop("given_up", False):
            p["given_up"] = p["reason"]
        if p.get("reason") not in _CLOSE_REASONS:
            p["reason"] = "end"
    return x


def load_scope(key: str, raw: bytes | None) -> ScopeState:
    return ScopeState() if not raw else _load(ScopeState, key, raw, _scope_v1)


def load_partition(key: str, raw: bytes | None) -> PartitionState:
    return PartitionState() if not raw else _load(PartitionState, key, raw)


def dump_chunk(suspects: list[Suspect]) -> bytes:
    return dump_state(_Chunk(suspects=suspects))


def load_chunk(key: str, raw: bytes) -> list[Suspect]:
    if raw[:1] == b"[":  # version 1: the bare list
        return _SUSPECTS.validate_json(raw)
    return _load(_Chunk, key, raw).suspects
