"""The large-model analyst: bundles -> incident reports, within budget, resilient to outages.

Names are loaded on first use (PEP 562), so importing the package is cheap: the CLI and the
settings do not pay for the heavy libraries (ONNX Runtime, scikit-learn, openai) until used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.stream._lazy import lazy_names

if TYPE_CHECKING:
    from sluice.models.analyst._bundle import (
        Bundle,
        BundleEvent,
        Digest,
        TemplateGroup,
        compress,
        is_alarming,
    )
    from sluice.models.analyst._config import (
        LLMSettings,
    )
    from sluice.models.analyst._heuristic import (
        HeuristicAnalyst,
    )
    from sluice.models.analyst._openai import SYSTEM_PROMPT, OpenAIAnalyst
    from sluice.models.analyst._protocol import (
        Analyst,
        Remote,
        create_analyst,
    )
    from sluice.models.analyst._resilience import (
        CircuitBreaker,
        backoff_delay,
    )
    from sluice.models.analyst._schema import (
        LLM_DOWN,
        AffectedService,
        Analysis,
        EdgeLatency,
        ErrorCategory,
        GraphEdge,
        IncidentReport,
        LLMAnswer,
        Provenance,
        RootCause,
        TemplateVerdict,
        strict_json_schema,
    )
    from sluice.models.analyst._signals import (
        ORIGIN_KINDS,
        PRECISE_KINDS,
        TELEMETRY_KINDS,
        Signal,
        SignalKind,
        signal_scores,
    )
    from sluice.models.analyst._tokens import (
        token_counter,
    )
    from sluice.models.analyst._triage import (
        TRIAGE_PROMPT,
        Triaged,
        TriageItem,
        Triager,
        TriageVerdict,
        parse_triage,
        render_triage,
    )
    from sluice.models.analyst._usage import UsageTotals
    from sluice.stream.errors import AnalystError, LLMCallError, LLMOutputError

__all__ = [
    "LLM_DOWN",
    "ORIGIN_KINDS",
    "PRECISE_KINDS",
    "SYSTEM_PROMPT",
    "TELEMETRY_KINDS",
    "TRIAGE_PROMPT",
    "AffectedService",
    "Analysis",
    "Analyst",
    "AnalystError",
    "Bundle",
    "BundleEvent",
    "CircuitBreaker",
    "Digest",
    "EdgeLatency",
    "ErrorCategory",
    "GraphEdge",
    "HeuristicAnalyst",
    "IncidentReport",
    "LLMAnswer",
    "LLMCallError",
    "LLMOutputError",
    "LLMSettings",
    "OpenAIAnalyst",
    "Provenance",
    "Remote",
    "RootCause",
    "Signal",
    "SignalKind",
    "TemplateGroup",
    "TemplateVerdict",
    "TriageItem",
    "TriageVerdict",
    "Triaged",
    "Triager",
    "UsageTotals",
    "backoff_delay",
    "compress",
    "create_analyst",
    "is_alarming",
    "parse_triage",
    "render_triage",
    "signal_scores",
    "strict_json_schema",
    "token_counter",
]

_WHERE = {
    "sluice.stream.errors": ["AnalystError", "LLMCallError", "LLMOutputError"],
    "sluice.models.analyst._bundle": [
        "Bundle",
        "BundleEvent",
        "Digest",
        "TemplateGroup",
        "compress",
        "is_alarming",
    ],
    "sluice.models.analyst._config": ["LLMSettings"],
    "sluice.models.analyst._heuristic": ["HeuristicAnalyst"],
    "sluice.models.analyst._openai": ["OpenAIAnalyst", "SYSTEM_PROMPT"],
    "sluice.models.analyst._usage": ["UsageTotals"],
    "sluice.models.analyst._protocol": ["Analyst", "Remote", "create_analyst"],
    "sluice.models.analyst._resilience": ["CircuitBreaker", "backoff_delay"],
    "sluice.models.analyst._schema": [
        "AffectedService",
        "Analysis",
        "EdgeLatency",
        "ErrorCategory",
        "LLM_DOWN",
        "GraphEdge",
        "IncidentReport",
        "LLMAnswer",
        "Provenance",
        "RootCause",
        "TemplateVerdict",
        "strict_json_schema",
    ],
    "sluice.models.analyst._tokens": ["token_counter"],
    "sluice.models.analyst._triage": [
        "TRIAGE_PROMPT",
        "TriageItem",
        "TriageVerdict",
        "Triaged",
        "Triager",
        "parse_triage",
        "render_triage",
    ],
    "sluice.models.analyst._signals": [
        "ORIGIN_KINDS",
        "PRECISE_KINDS",
        "TELEMETRY_KINDS",
        "Signal",
        "SignalKind",
        "signal_scores",
    ],
}


__getattr__, __dir__ = lazy_names(globals(), _WHERE)
