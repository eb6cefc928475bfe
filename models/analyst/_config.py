"""The LLM analyst's settings (part of the one Settings object, under SLUICE_LLM__*)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr

__all__ = ["LLMSettings"]


class LLMSettings(BaseModel):
    """Any OpenAI-compatible endpoint; no base_url means the offline heuristic analyst."""

    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    timeout_s: float = Field(30.0, gt=0)
    structured_output: Literal["json_schema", "json_object"] = Field(
        "json_schema", description="json_schema (strict) where supported, else JSON mode"
    )
    max_completion_tokens: int = Field(2000, ge=64)
    # Prompt shape
    prompt_token_budget: int = Field(6000, ge=256)
    examples_per_template: int = Field(3, ge=0)
    # Budget and resilience
    concurrency: int = Field(4, ge=1)
    requests_per_minute: int = Field(60, ge=1)
    tokens_per_minute: int = Field(200_000, ge=1000)
    max_retries: int = Field(3, ge=0)
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(20.0, ge=0)
    breaker_failures: int = Field(5, ge=1, description="consecutive failures that open the circuit")
    breaker_reset_s: float = Field(30.0, gt=0, description="open time before a half-open probe")
    # Cost accounting, USD per 1M tokens
    price_prompt_per_mtok: float = Field(0.15, ge=0)
    price_completion_per_mtok: float = Field(0.60, ge=0)
