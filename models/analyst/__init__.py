"""The large-model analyst: bundles -> incident reports, within budget, resilient to outages.

Names are loaded on first use (PEP 562), so importing the package is cheap: the CLI and the
settings do not pay for the heavy libraries (ONNX Runtime, scikit-learn, openai) until used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from models._lazy import lazy_names

if TYPE_CHECKING:
    from models.analyst._bundle import (
        Bundle,
        BundleEvent,
        Digest,
        TemplateGroup,
        compress,
    )
    from models.analyst._config import (
        LLMSettings,
    )
    from models.analyst._heuristic import (
        HeuristicAnalyst,
    )
    from models.analyst._openai import (
        SYSTEM_PROMPT,
        AnalystError,
        LLMCallError,
        LLMOutputError,
        OpenAIAnalyst,
        UsageTotals,
    )
    from models.analyst._protocol import (
        Analyst,
        create_analyst,
    )
    from models.analyst._resilience import (
        CircuitBreaker,
        backoff_delay,
    )
    from models.analyst._schema import (
        AffectedService,
        Analysis,
        ErrorCategory,
        GraphEdge,
        IncidentReport,
        LLMAnswer,
        Provenance,
        RootCause,
        TemplateVerdict,
        strict_json_schema,
    )
    from models.analyst._tokens import (
        token_counter,
    )

__all__ = [
    "SYSTEM_PROMPT",
    "AffectedService",
    "Analysis",
    "Analyst",
    "AnalystError",
    "Bundle",
    "BundleEvent",
    "CircuitBreaker",
    "Digest",
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

_WHERE = {
    "Bundle": "models.analyst._bundle",
    "BundleEvent": "models.analyst._bundle",
    "Digest": "models.analyst._bundle",
    "TemplateGroup": "models.analyst._bundle",
    "compress": "models.analyst._bundle",
    "LLMSettings": "models.analyst._config",
    "HeuristicAnalyst": "models.analyst._heuristic",
    "AnalystError": "models.analyst._openai",
    "LLMCallError": "models.analyst._openai",
    "LLMOutputError": "models.analyst._openai",
    "OpenAIAnalyst": "models.analyst._openai",
    "SYSTEM_PROMPT": "models.analyst._openai",
    "UsageTotals": "models.analyst._openai",
    "Analyst": "models.analyst._protocol",
    "create_analyst": "models.analyst._protocol",
    "CircuitBreaker": "models.analyst._resilience",
    "backoff_delay": "models.analyst._resilience",
    "AffectedService": "models.analyst._schema",
    "Analysis": "models.analyst._schema",
    "ErrorCategory": "models.analyst._schema",
    "GraphEdge": "models.analyst._schema",
    "IncidentReport": "models.analyst._schema",
    "LLMAnswer": "models.analyst._schema",
    "Provenance": "models.analyst._schema",
    "RootCause": "models.analyst._schema",
    "TemplateVerdict": "models.analyst._schema",
    "strict_json_schema": "models.analyst._schema",
    "token_counter": "models.analyst._tokens",
}


__getattr__, __dir__ = lazy_names(globals(), _WHERE)
