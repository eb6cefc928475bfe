"""Wire records: pydantic models, JSON on the wire, each with a schema version."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.analyst import IncidentReport, Provenance

__all__ = [
    "SCHEMA_VERSION",
    "Alert",
    "DeadLetter",
    "Event",
    "Feedback",
    "Suspect",
    "record_schema",
]

SCHEMA_VERSION = 1


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
    sampling_probability: float = Field(description="1 for flagged events, the audit rate else")
    scope: str


class Alert(_Record):
    fingerprint: str
    revision: int
    status: Literal["firing", "resolved"]
    report: IncidentReport
    provenance: Provenance
    evidence: dict[str, str] = Field(description="template id -> template")
    generated_at: datetime


class Feedback(_Record):
    template: str
    text: str | None = Field(None, description="one raw example, for retraining")
    label: bool
    source: Literal["llm", "human", "audit", "heuristic"]
    weight: float
    model_version: str | None
    score: float | None
    scope: str | None = None


class DeadLetter(_Record):
    value_b64: str
    topic: str
    partition: int | None
    offset: int | None
    reason: str

    @classmethod
    def of(
        cls, raw: bytes, topic: str, partition: int | None, offset: int | None, reason: str
    ) -> DeadLetter:
        return cls(
            value_b64=base64.b64encode(raw).decode(),
            topic=topic,
            partition=partition,
            offset=offset,
            reason=reason,
        )


def record_schema(
    name: Literal["event", "suspect", "alert", "feedback", "deadletter"],
) -> dict[str, Any]:
    models: dict[str, type[BaseModel]] = {
        "event": Event,
        "suspect": Suspect,
        "alert": Alert,
        "feedback": Feedback,
        "deadletter": DeadLetter,
    }
    return models[name].model_json_schema()
