"""The large-model analyst: bundles -> incident reports, within budget, resilient to outages."""

from models.analyst._bundle import Bundle, BundleEvent, Digest, TemplateGroup, compress
from models.analyst._config import LLMSettings
from models.analyst._heuristic import HeuristicAnalyst
from models.analyst._openai import (
    AnalystError,
    LLMCallError,
    LLMOutputError,
    OpenAIAnalyst,
    UsageTotals,
)
from models.analyst._protocol import Analyst, create_analyst
from models.analyst._resilience import CircuitBreaker, backoff_delay
from models.analyst._schema import (
    AffectedService,
    Analysis,
    GraphEdge,
    IncidentReport,
    LLMAnswer,
    Provenance,
    RootCause,
    TemplateVerdict,
    strict_json_schema,
)
from models.analyst._tokens import token_counter

__all__ = [
    "AffectedService",
    "Analysis",
    "Analyst",
    "AnalystError",
    "Bundle",
    "BundleEvent",
    "CircuitBreaker",
    "Digest",
    "GraphEdge",
    "HeuristicAnalyst",
    "IncidentReport",
    "LLMAnswer",
    "LLMCallError",
    "LLMOutputError",
    "LLMSettings",
    "OpenAIAnalyst",
    "Provenance",
    "RootCause",
    "TemplateGroup",
    "TemplateVerdict",
    "UsageTotals",
    "backoff_delay",
    "compress",
    "create_analyst",
    "strict_json_schema",
    "token_counter",
]
