"""The LLM analyst's settings (part of the one Settings object, under SLUICE_LLM__*)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr

__all__ = ["LLMSettings", "StructuredMode"]

#: How the answer's JSON Schema reaches the endpoint, strongest first: OpenAI's strict
#: `json_schema`; a schema in llama.cpp's own form (`json_object` with `schema`, which
#: llama-cpp-python's server turns into a grammar); JSON mode with the schema in the prompt; plain
#: text with the schema in the prompt. Each answer is validated and repaired once either way.
StructuredMode = Literal["json_schema", "json_object_schema", "json_object", "text"]


class LLMSettings(BaseModel):
    """Any OpenAI-compatible endpoint; no base_url means the offline heuristic analyst."""

    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    timeout_s: float = Field(
        30.0,
        gt=0,
        description="per call; a model served on CPU may need 120 or more for a full analysis",
    )
    max_timeout_s: float = Field(
        300.0,
        gt=0,
        description="how far a slow endpoint's per-call wait may grow: a call that timed out on "
        "an endpoint that still answers a one-token probe waits twice as long from then on, up "
        "to this (an endpoint that answers nothing is down, as before)",
    )
    timeout_retries: int = Field(
        0,
        ge=0,
        description="retries of a call that timed out (within max_retries): a server that did "
        "not answer in timeout_s is busy or hung, and another wait as long rarely helps; the "
        "worker analyses a degraded window again later anyway (pipeline.degraded_retries)",
    )
    structured_output: Literal["auto", StructuredMode] = Field(
        "auto",
        description="auto: the strongest mode the endpoint accepts, found on the first call "
        "and kept per endpoint and model; a named mode is used as it is",
    )
    max_completion_tokens: int = Field(2000, ge=64)
    context_window: int | None = Field(
        None,
        ge=512,
        description="the model's context in tokens; prompt and answer are cut to fit it. None: "
        "asked of the server where it reports it (vLLM, llama.cpp), else no limit",
    )
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
