"""The analyst's output: an incident report plus a verdict per template (the filter's labels).

`LLMAnswer` is exactly what the model must return; its JSON Schema is generated from these
classes and sent as the response format. Everything the model does not decide (fingerprint,
provenance) is added by Sluice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "LLM_DOWN",
    "AffectedService",
    "Analysis",
    "ErrorCategory",
    "GraphEdge",
    "IncidentReport",
    "LLMAnswer",
    "Provenance",
    "RootCause",
    "Severity",
    "TemplateVerdict",
    "each_schema_node",
    "strict_json_schema",
]

Severity = Literal["critical", "high", "warning", "info"]
Role = Literal["root_cause", "impacted", "symptom"]
AnalysisKind = Literal["llm", "heuristic", "degraded"]
#: Why a report is degraded, as a category alerting and dashboards can group on.
ErrorCategory = Literal[
    "circuit_open",
    "unreachable",
    "timeout",
    "rate_limited",
    "server_error",
    "refused",
    "invalid_output",
    "internal",
]

#: The categories of an LLM that could not be had (as opposed to one that answered badly):
#: the analysis stage asks again later only for these.
LLM_DOWN: frozenset[ErrorCategory] = frozenset(
    {"circuit_open", "unreachable", "timeout", "rate_limited", "server_error"}
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AffectedService(_Strict):
    service: str
    role: Role
    evidence: str = Field(description="template ids and counts that implicate the service")


class GraphEdge(_Strict):
    source: str = Field(description="calling service")
    target: str = Field(description="called service")
    evidence: str


class EdgeLatency(_Strict):
    """A caller -> callee edge as the filter stage measured it in the window (from the trace
    gaps of every event, not the analyst's opinion): p95 gap from the caller's last line before
    the call to the callee's first line, and the same edge's usual p95."""

    source: str
    target: str
    p95_ms: float
    baseline_p95_ms: float | None = None
    gaps: int = Field(ge=0, description="gaps sampled in the window (the p95's sample)")


class RootCause(_Strict):
    service: str
    description: str
    confidence: float = Field(ge=0.0, le=1.0)


class TemplateVerdict(_Strict):
    template_id: str = Field(description="the id shown in the bundle, e.g. T3")
    relevant: bool = Field(description="relevant to an incident (true) or background noise")


class LLMAnswer(_Strict):
    is_incident: bool
    severity: Severity
    title: str
    summary: str
    affected_services: list[AffectedService]
    service_graph: list[GraphEdge]
    root_causes: list[RootCause]
    recommendations: list[str]
    verdicts: list[TemplateVerdict]


class IncidentReport(_Strict):
    scope: str
    is_incident: bool
    severity: Severity
    title: str
    summary: str
    first_seen: datetime | None
    last_seen: datetime | None
    affected_services: list[AffectedService]
    service_graph: list[GraphEdge]
    root_causes: list[RootCause]
    recommendations: list[str]
    latencies: list[EdgeLatency] = Field(
        default_factory=list, description="measured edge latencies of the window (signals on)"
    )

    def fingerprint(self) -> str:
        """Stable across revisions of one incident: scope plus root-cause services."""
        causes = sorted({c.service for c in self.root_causes}) or sorted(
            {a.service for a in self.affected_services if a.role == "root_cause"}
        )
        return hashlib.sha256(f"{self.scope}|{','.join(causes)}".encode()).hexdigest()[:16]


class Provenance(_Strict):
    analysis: AnalysisKind
    filter_version: str | None
    llm_model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 0
    templates_in_prompt: int = 0
    templates_truncated: int = 0
    error: str | None = Field(
        None, description="why the LLM was not used: Sluice's own short words, never log text"
    )
    error_category: ErrorCategory | None = None
    redactions: dict[str, int] = Field(
        default_factory=dict, description="secrets and personal data replaced, by placeholder"
    )


class Analysis(_Strict):
    report: IncidentReport
    verdicts: list[TemplateVerdict]
    provenance: Provenance
    templates: dict[str, str] = Field(description="template id -> template text, for feedback")


def strict_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A JSON Schema for OpenAI strict structured output: every property required, no extras.

    Numeric bounds are removed from the schema (not all endpoints accept them) and enforced by
    validating the answer with pydantic afterwards.
    """
    schema = model.model_json_schema()

    def fix(node: dict[str, Any]) -> None:
        if node.get("type") == "object" and "properties" in node:
            node["additionalProperties"] = False
            node["required"] = list(node["properties"])
        for key in ("minimum", "maximum", "default", "title"):
            if key in node and not isinstance(node[key], dict):
                node.pop(key)

    each_schema_node(schema, fix)
    return schema


def each_schema_node(node: Any, fn: Callable[[dict[str, Any]], None]) -> None:
    """`fn` on every object of a JSON Schema, parents before their children (in place)."""
    if isinstance(node, dict):
        fn(node)
        for v in list(node.values()):
            each_schema_node(v, fn)
    elif isinstance(node, list):
        for v in node:
            each_schema_node(v, fn)
