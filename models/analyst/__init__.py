"""The large-model analyst: bundles -> incident reports, within budget, resilient to outages.

Names are loaded on first use (PEP 562), so importing the package is cheap: the CLI and the
settings do not pay for the heavy libraries (ONNX Runtime, scikit-learn, openai) until used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.models._lazy import lazy_names

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
    from sluice.models.analyst._openai import (
        SYSTEM_PROMPT,
        AnalystError,
        LLMCallError,
        LLMOutputError,
        OpenAIAnalyst,
        UsageTotals,
    )
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

__all__ = [
    "LLM_DOWN",
    "ORIGIN_KINDS",
    "PRECISE_KINDS",
    "SYSTEM_PROMPT",
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
    "Bundle": "sluice.models.analyst._bundle",
    "BundleEvent": "sluice.models.analyst._bundle",
    "Digest": "sluice.models.analyst._bundle",
    "TemplateGroup": "sluice.models.analyst._bundle",
    "compress": "sluice.models.analyst._bundle",
    "is_alarming": "sluice.models.analyst._bundle",
    "LLMSettings": "sluice.models.analyst._config",
    "HeuristicAnalyst": "sluice.models.analyst._heuristic",
    "AnalystError": "sluice.models.analyst._openai",
    "LLMCallError": "sluice.models.analyst._openai",
    "LLMOutputError": "sluice.models.analyst._openai",
    "OpenAIAnalyst": "sluice.models.analyst._openai",
    "SYSTEM_PROMPT": "sluice.models.analyst._openai",
    "UsageTotals": "sluice.models.analyst._openai",
    "Analyst": "sluice.models.analyst._protocol",
    "Remote": "sluice.models.analyst._protocol",
    "create_analyst": "sluice.models.analyst._protocol",
    "CircuitBreaker": "sluice.models.analyst._resilience",
    "backoff_delay": "sluice.models.analyst._resilience",
    "AffectedService": "sluice.models.analyst._schema",
    "Analysis": "sluice.models.analyst._schema",
    "EdgeLatency": "sluice.models.analyst._schema",
    "ErrorCategory": "sluice.models.analyst._schema",
    "LLM_DOWN": "sluice.models.analyst._schema",
    "GraphEdge": "sluice.models.analyst._schema",
    "IncidentReport": "sluice.models.analyst._schema",
    "LLMAnswer": "sluice.models.analyst._schema",
    "Provenance": "sluice.models.analyst._schema",
    "RootCause": "sluice.models.analyst._schema",
    "TemplateVerdict": "sluice.models.analyst._schema",
    "strict_json_schema": "sluice.models.analyst._schema",
    "token_counter": "sluice.models.analyst._tokens",
    "TRIAGE_PROMPT": "sluice.models.analyst._triage",
    "TriageItem": "sluice.models.analyst._triage",
    "TriageVerdict": "sluice.models.analyst._triage",
    "Triaged": "sluice.models.analyst._triage",
    "Triager": "sluice.models.analyst._triage",
    "parse_triage": "sluice.models.analyst._triage",
    "render_triage": "sluice.models.analyst._triage",
    "ORIGIN_KINDS": "sluice.models.analyst._signals",
    "PRECISE_KINDS": "sluice.models.analyst._signals",
    "Signal": "sluice.models.analyst._signals",
    "SignalKind": "sluice.models.analyst._signals",
    "signal_scores": "sluice.models.analyst._signals",
}


__getattr__, __dir__ = lazy_names(globals(), _WHERE)
