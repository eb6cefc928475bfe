"""The Analyst seam and its factory."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sluice.models.analyst._bundle import Bundle
from sluice.models.analyst._config import LLMSettings
from sluice.models.analyst._heuristic import HeuristicAnalyst
from sluice.models.analyst._schema import Analysis

__all__ = ["Analyst", "Remote", "create_analyst"]


@runtime_checkable
class Analyst(Protocol):
    """Turns a bundle into an incident report and per-template verdicts. Never raises."""

    name: str

    async def analyze(self, bundle: Bundle) -> Analysis: ...


@runtime_checkable
class Remote(Protocol):
    """An analyst that calls an endpoint: `sluice scan` stops calling one that is down."""

    def is_down(self) -> bool:
        """Did the last call find the endpoint down (unreachable, timing out, failing)?"""
        ...

    def stay_offline(self) -> None:
        """From now on, degraded reports at once, with no call."""
        ...


def create_analyst(cfg: LLMSettings) -> Analyst:
    """The LLM analyst when an endpoint is configured, else the offline heuristic one."""
    if cfg.base_url:
        from sluice.models.analyst._openai import OpenAIAnalyst

        return OpenAIAnalyst(cfg)
    return HeuristicAnalyst(cfg.prompt_token_budget, cfg.examples_per_template)
