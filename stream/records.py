"""Wire records: pydantic models, JSON on the wire, each with a schema version.

Writers are strict (a field the model does not declare is a bug: `extra="forbid"`); readers
are tolerant of what a newer release of the same major version may add. `read_record` (and the
topic readers `parse_suspects_record`, `parse_control_record`) read a record with the fields
this release knows, drop and count the ones it does not, and refuse a newer major version
(`stream.wire`). The rules are in docs/architecture.md, "Wire compatibility".

Why one module: every record a topic carries, side by side, is what a reviewer checks a wire
change against (what was added, what stayed); split by topic, the shared parts (versions, the
event, dead-letter kinds) would be imported back and forth.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from sluice.models.analyst import Analysis, IncidentReport, Provenance
from sluice.stream.wire import read_model, read_tagged

__all__ = [
    "DEAD_LETTER_KEEP_BYTES",
    "EARLIEST_EVENT_TIME",
    "LATEST_EVENT_TIME",
    "RECORDS",
    "SCHEMA_VERSION",
    "Ack",
    "Acknowledgement",
    "Alert",
    "Analysed",
    "ControlRecord",
    "DeadLetter",
    "Event",
    "Feedback",
    "Outcome",
    "RecordName",
    "Silence",
    "Suspect",
    "SuspectBatch",
    "SuspectsRecord",
    "Tick",
    "dead_letter_kind",
    "parse_control_record",
    "parse_suspects_record",
    "read_record",
    "record_schema",
]

#: The major version of every wire record: what `schema_version` says and readers check. Added
#: optional fields keep it (a minor change); removing, renaming, retyping a field or changing its
#: meaning raise it (docs/architecture.md, "Wire compatibility").
SCHEMA_VERSION = 1
#: Event times outside [EARLIEST_EVENT_TIME, LATEST_EVENT_TIME) are no time at all: the range of
#: nanosecond epochs, far enough from datetime's limits that window arithmetic cannot overflow.
EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_EVENT_TIME = datetime(2262, 4, 11, tzinfo=UTC)
#: The most raw bytes a dead letter keeps (base64 grows it by a third; Kafka's limit is 1 MiB).
DEAD_LETTER_KEEP_BYTES = 256 * 1024


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class Event(_Record):
    """One parsed log event. `attributes` keeps every other field of a JSON event as text."""

    ts: datetime | None = None
    service: str
    host: str | None = None
    level: str = ""
    message: str
    trace_id: str | None = None
    span_id: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    source: str | None = Field(None, description="topic:partition:offset or file:line")


class Suspect(_Record):
    event: Event
    score: float
    model_version: str
    audit: bool = Field(description="sent as an audit sample, not because it was flagged")
    sampling_probability: float = Field(
        description="1 for flagged events; else the probability it was drawn with (the audit "
        "rate, or more on a template's first sightings)"
    )
    scope: str
    reason: Literal["model", "verdict", "first_sight", "audit"] = Field(
        "model",
        description="what forwarded it: the model's score, a relevant verdict on its template, "
        "a first sighting of its template, or the audit sample (an exemplar's is `model`)",
    )
    exemplar: Literal["call", "self", "failed"] | None = Field(
        None, description="an event written of a slow or failed span (`signals.spans`): evidence, "
        "never a line to learn from (a field, not a `reason`: the release before drops it)",
    )  # fmt: skip
    verdict: Literal["human", "llm", "audit"] | None = Field(
        None, description="the source of the verdict in force for its template, if any"
    )


class SuspectBatch(_Record):
    """What the filter stage forwards from one fetched batch of one partition, for one scope.

    One message per batch and scope instead of one per event: the analysis stage (Faust) pays its
    per-message cost once per batch, and its state changes once per batch.
    """

    kind: Literal["suspects"] = "suspects"
    scope: str
    suspects: list[Suspect]


class Tick(_Record):
    """A worker's timer, sent to a suspects partition it owns: idle windows close in order."""

    kind: Literal["tick"] = "tick"


class Analysed(_Record):
    """The outcome of one window's analysis, sent back to the window's partition.

    The analysis runs outside the stream (concurrently, never blocking it); its result enters the
    state through the stream like any record, so state changes only in partition order.
    """

    kind: Literal["analysed"] = "analysed"
    scope: str
    seq: int
    attempt: int
    analysis: str | None = Field(None, description="the Analysis as JSON; None when it raised")
    error: str | None = None
    done_at: datetime


class SignalCounts(_Record):
    """What the filter stage counted of every event of one batch and scope, for the signals
    (`stream.signals`). Sent beside the scope's suspects; the analysis stage keeps the baselines.
    Services and line shapes are named once in `names` and `templates`; rows refer to them by
    position:

    - `services`: events per event-time bucket and service;
    - `gaps`: caller -> callee gaps within traces (seconds);
    - `lines`: events per bucket, service and line shape, and how many of them carried a trace;
    - `steps`: within a trace, how often one line was followed by another (counted in the
      bucket of the first);
    - `spans`, `calls`, `metrics`: what spans and metric points said (`signals.spans`): per
      service its spans' self time; per caller -> callee edge its calls, their duration at the
      caller and the time outside the callee; per service and metric (named in `metric_names`)
      the points' sum. Times are sums of natural logarithms of microseconds (a geometric mean
      per bucket, which one slow outlier cannot carry)."""

    kind: Literal["counts"] = "counts"
    scope: str
    bucket_s: float
    names: list[str] = Field(default_factory=list, description="services of this record")
    templates: list[str] = Field(default_factory=list, description="line shapes of this record")
    services: list[tuple[int, int, int]] = Field(
        default_factory=list, description="bucket, service, events"
    )
    gaps: list[tuple[int, int, int, float]] = Field(
        default_factory=list, description="bucket, caller, callee, seconds"
    )
    lines: list[tuple[int, int, int, int, int]] = Field(
        default_factory=list, description="bucket, service, template, events, traced events"
    )
    steps: list[tuple[int, int, int, int, int, int]] = Field(
        default_factory=list,
        description="bucket, service, template, next service, next template, times",
    )
    spans: list[tuple[int, int, int, float, int]] = Field(
        default_factory=list, description="bucket, service, spans, sum ln self-time us, errors"
    )
    calls: list[tuple[int, int, int, int, float, int, float, int]] = Field(
        default_factory=list,
        description="bucket, caller, callee, calls, sum ln client us, calls timed outside the "
        "callee, sum ln outside us, failed calls",
    )
    metric_names: list[str] = Field(default_factory=list, description="metrics of this record")
    metrics: list[tuple[int, int, int, int, float]] = Field(
        default_factory=list, description="bucket, service, metric, points, sum of values"
    )


SuspectsRecord = Annotated[
    SuspectBatch | Tick | Analysed | SignalCounts, Field(discriminator="kind")
]
_M = TypeVar("_M", bound=BaseModel)
_SUSPECTS_ADAPTER: TypeAdapter[SuspectBatch | Tick | Analysed | SignalCounts] = TypeAdapter(
    SuspectsRecord
)


def parse_suspects_record(raw: bytes) -> SuspectBatch | Tick | Analysed | SignalCounts:
    """A record of the suspects topic (`read_record`'s tolerance); raises RecordError otherwise."""
    return read_tagged(_SUSPECTS_ADAPTER, _SUSPECTS_KINDS, raw, "suspects", SCHEMA_VERSION)


class Acknowledgement(BaseModel):
    """Who took an alert on, when, and what they said (`sluice ack`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: str
    at: datetime
    note: str | None = None


class Alert(_Record):
    fingerprint: str
    revision: int
    status: Literal["firing", "resolved"]
    report: IncidentReport
    provenance: Provenance
    evidence: dict[str, str] = Field(description="template id -> template")
    anomalous: list[str] | None = Field(
        None,
        description="the evidence's template ids the analysis judged relevant to the incident; "
        "the others are context (absent: all, as a release before this field wrote them)",
    )
    generated_at: datetime
    acknowledged: Acknowledgement | None = Field(
        None, description="set once someone acknowledged this firing episode (`sluice ack`)"
    )
    silenced_until: datetime | None = Field(
        None, description="a silence covers the alert's scope or a service it names until then"
    )

    def services(self) -> set[str]:
        """Every service the alert names: root causes, affected services, graph edges."""
        r = self.report
        named = {c.service for c in r.root_causes} | {s.service for s in r.affected_services}
        return named | {e.source for e in r.service_graph} | {e.target for e in r.service_graph}


class Ack(_Record):
    """`sluice ack FINGERPRINT`: someone is on it. Applies to the alert's current firing
    episode (one that started before `at`); a later episode of the same fingerprint pages again."""

    kind: Literal["ack"] = "ack"
    fingerprint: str = Field(min_length=1, max_length=200)
    by: str = Field(max_length=200)
    note: str | None = Field(None, max_length=2000)
    at: datetime

    def key(self) -> str:
        return f"ack/{self.fingerprint}"


class Silence(_Record):
    """`sluice silence TARGET --for 2h`: no sink notifies about alerts whose scope is TARGET or
    that name the service TARGET, until `until`. A silence with `until` <= `at` lifts one."""

    kind: Literal["silence"] = "silence"
    target: str = Field(min_length=1, max_length=200, description="a scope or a service")
    until: datetime
    by: str = Field(max_length=200)
    note: str | None = Field(None, max_length=2000)
    at: datetime

    def key(self) -> str:
        return f"silence/{self.target}"

    def covers(self, a: Alert, now: datetime) -> bool:
        return now < self.until and (self.target == a.report.scope or self.target in a.services())


ControlRecord = Annotated[Ack | Silence, Field(discriminator="kind")]
_CONTROL_ADAPTER: TypeAdapter[Ack | Silence] = TypeAdapter(ControlRecord)


def parse_control_record(raw: bytes) -> Ack | Silence:
    """A record of the controls topic (`read_record`'s tolerance); raises RecordError otherwise."""
    return read_tagged(_CONTROL_ADAPTER, _CONTROL_KINDS, raw, "control", SCHEMA_VERSION)


class Feedback(_Record):
    """A label for one template: what the analysis (or a person) said about it.

    The `feedback` topic is compacted by `key()`, one record per (source, template): the latest
    verdict of each source survives, so a person's label is never overwritten by the LLM's next
    one and the retrainer can put `human` over `llm`. Counts and audit weights of every window are
    on the `outcomes` topic (not compacted), where the recall estimate reads them.
    """

    template: str
    text: str | None = Field(None, description="one raw example, for retraining")
    label: bool
    source: Literal["llm", "human", "audit", "heuristic"]
    weight: float = Field(description="events this label stands for (audit samples count 1/p)")
    model_version: str | None
    score: float | None
    scope: str | None = None
    at: datetime | None = Field(None, description="when the label was given (time-ordered split)")
    by: str | None = Field(None, description="who gave a human label")

    def key(self) -> str:
        """The feedback topic's key: compaction keeps the latest label per source and template."""
        return hashlib.sha256(f"{self.source}|{self.template}".encode()).hexdigest()[:16]


class SignalVerdict(BaseModel):
    """One signal of an analysed window and what the analysis made of it: whether the report
    named its service, and as the root cause. The record a later threshold can learn from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    service: str
    strength: float
    caller: str | None = None
    named: bool
    root_cause: bool


class Outcome(_Record):
    """One analysed window's counts for one filter version: what the recall estimate needs.

    Flagged events are a census (every one reaches the analysis); unflagged events are seen only
    through the audit sample, drawn with probability `audit_rate`. Events are labelled by the
    verdict on their template; events of templates without a verdict are counted as such.
    """

    scope: str
    window_end: datetime
    model_version: str
    audit_rate: float
    analysis: Literal["llm", "degraded", "heuristic"]
    flagged_positive: int = 0
    flagged_negative: int = 0
    audited_positive: int = 0
    audited_negative: int = 0
    census_positive: int = Field(
        0,
        description="of audited_positive: drawn with probability 1 (a template's first "
        "sightings), misses counted, not estimated",
    )
    raised_positive: int = Field(
        0,
        description="of audited_positive: drawn with a probability between the audit rate "
        "and 1 (first sight decaying)",
    )
    raised_weight: float = Field(0.0, description="the sum of 1/p over the raised positives")
    raised_negative: int = Field(0, description="of audited_negative: drawn with such a p")
    unlabelled: int = 0
    at: datetime
    signals: list[SignalVerdict] = Field(
        default_factory=list,
        description="the window's signals and what the analysis made of them (the same list on "
        "each filter version's outcome of the window)",
    )

    def key(self) -> str:
        return self.model_version


class DeadLetter(_Record):
    """A record that could not be processed, with where it came from and why.

    The raw bytes are kept up to `DEAD_LETTER_KEEP_BYTES` (a dead letter must itself fit under
    Kafka's record limit); `size` and `truncated` say what was cut, and topic, partition and
    offset point at the whole record.
    """

    value_b64: str
    topic: str
    partition: int | None
    offset: int | None
    reason: str
    size: int | None = Field(None, description="bytes of the original record")
    truncated: bool = False

    @classmethod
    def of(
        cls,
        raw: bytes,
        topic: str,
        partition: int | None,
        offset: int | None,
        reason: str,
    ) -> DeadLetter:
        keep = DEAD_LETTER_KEEP_BYTES
        return cls(
            value_b64=base64.b64encode(raw[:keep]).decode(),
            topic=topic,
            partition=partition,
            offset=offset,
            reason=reason,
            size=len(raw),
            truncated=len(raw) > keep,
        )

    @property
    def kind(self) -> str:
        """A short, bounded name for the reason (a metrics label; the reason says the rest)."""
        return dead_letter_kind(self.reason)


#: Reason prefixes -> kind, first match wins; the reasons are written in stream.parsing,
#: stream.filtering and stream.analysis (tests/test_metrics.py checks the corpus maps to them).
_DEAD_LETTER_KINDS = (
    ("event of ", "too_large"),
    ("forwarded event of ", "too_large"),
    ("empty event", "empty"),
    ("invalid JSON", "invalid_json"),
    ("JSON object without a message", "no_message"),
    ("unparseable event", "unparseable"),
    ("unusable event", "unusable"),
    ("invalid event fields", "unusable"),
    ("filter failed", "filter_failed"),
    ("not a suspects record", "not_suspects"),
    ("OTLP ", "otlp"),
    ("binary record", "binary"),
    ("schema version ", "newer_schema"),
    ("scope ", "scope_limit"),
    ("sink ", "sink_failed"),
    ("analysis failed", "analysis_failed"),
    ("analysis stage failed", "analysis_failed"),
)


def dead_letter_kind(reason: str) -> str:
    """The kind of a dead-letter reason: too_large, invalid_json, ..., or other."""
    return next((kind for prefix, kind in _DEAD_LETTER_KINDS if reason.startswith(prefix)), "other")


RecordName = Literal[
    "event",
    "suspect",
    "suspects",
    "tick",
    "analysed",
    "counts",
    "alert",
    "feedback",
    "outcome",
    "deadletter",
    "ack",
    "silence",
]
#: Every wire record by the name `sluice schema` and the metrics know it by.
RECORDS: Mapping[str, type[BaseModel]] = {
    "event": Event,
    "suspect": Suspect,
    "suspects": SuspectBatch,
    "tick": Tick,
    "analysed": Analysed,
    "counts": SignalCounts,
    "alert": Alert,
    "feedback": Feedback,
    "outcome": Outcome,
    "deadletter": DeadLetter,
    "ack": Ack,
    "silence": Silence,
}
_NAMES = {model: name for name, model in RECORDS.items()} | {Analysis: "analysis"}
_SUSPECTS_KINDS: Mapping[str, type[_Record]] = {
    "suspects": SuspectBatch, "tick": Tick, "analysed": Analysed, "counts": SignalCounts
}  # fmt: skip
_CONTROL_KINDS: Mapping[str, type[_Record]] = {"ack": Ack, "silence": Silence}

_COMPATIBILITY = (
    "Schema version {v}. Readers of version {v} ignore fields they do not know: a later release "
    "may add optional fields to any object of this record without changing the version. "
    "Removing, renaming or retyping a field, or changing what one means, makes version {n}, "
    "which readers of version {v} refuse (a dead letter naming both versions)."
)


def record_schema(name: RecordName) -> dict[str, Any]:
    """The JSON Schema of a wire record as readers take it (`sluice schema NAME`): its version,
    and open to the fields a later release of the same version may add."""
    schema: dict[str, Any] = _open(RECORDS[name].model_json_schema())
    head = {
        "x-sluice-schema-version": SCHEMA_VERSION,
        "$comment": _COMPATIBILITY.format(v=SCHEMA_VERSION, n=SCHEMA_VERSION + 1),
    }
    return head | schema


def _open(node: Any) -> Any:
    """The schema without `additionalProperties: false`: writers add none, readers accept them."""
    if isinstance(node, dict):
        return {k: _open(v) for k, v in node.items() if (k, v) != ("additionalProperties", False)}
    if isinstance(node, list):
        return [_open(v) for v in node]
    return node


def read_record(model: type[_M], raw: bytes | str, name: str | None = None) -> _M:
    """A record of `model` from JSON written by this release or another of the same major
    version (`stream.wire`): fields this release does not know are dropped and counted, a newer
    major version raises RecordVersionError, anything else unreadable RecordError (its message a
    dead letter's reason). `name` is the record kind in errors and metrics (default: its RECORDS
    name)."""
    kind = name or _NAMES.get(model, model.__name__.lower())
    return read_model(model, raw, name=kind, version=SCHEMA_VERSION)
