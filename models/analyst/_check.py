"""`sluice llm check`: what an endpoint offers and what Sluice will use of it.

Probes in the order a person would debug: can it be reached, does it know the key and the model,
how large is the model's context, which structured-output mode it accepts, and what one small
analysis costs (seconds, tokens). Each failure comes with what to change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import openai
from openai import AsyncOpenAI

from sluice.models.analyst._bundle import Bundle, BundleEvent
from sluice.models.analyst._config import LLMSettings
from sluice.models.analyst._openai import OpenAIAnalyst

__all__ = ["EndpointCheck", "check_endpoint"]

Verdict = Literal["ok", "degraded", "failed", "offline"]

_T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
#: A small incident: one service timing out on another, which then fails its callers.
_PROBE = Bundle(
    scope="llm-check",
    events=[
        BundleEvent(service, text, level, _T0 + timedelta(seconds=i))
        for service, text, level, n in (
            ("checkout", "ERROR payment call failed: upstream timeout after 5000 ms", "ERROR", 3),
            ("payment", "WARN connection pool exhausted (50/50 in use)", "WARN", 2),
        )
        for i in range(n)
    ],
    window_start=_T0,
    window_end=_T0 + timedelta(seconds=60),
)


@dataclass
class EndpointCheck:
    """What `check_endpoint` found; `lines` are what the command prints."""

    verdict: Verdict = "failed"
    models: list[str] | None = None
    mode: str | None = None
    context_window: int | None = None
    seconds: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    lines: list[str] = field(default_factory=list)

    def say(self, what: str, text: str) -> None:
        self.lines.append(f"{what:<11} {text}")


def _connect_problem(exc: Exception, cfg: LLMSettings) -> str | None:
    """The person's words for a failed first request, or None where it is not about access."""
    if isinstance(exc, openai.APITimeoutError):
        return f"no answer within {min(10.0, cfg.timeout_s):g} s: is the server up and not busy?"
    if isinstance(exc, openai.APIConnectionError):
        cause = type(exc.__cause__ or exc).__name__
        return (
            f"cannot connect ({cause}): is the server running, and is SLUICE_LLM__BASE_URL "
            "right (the API's root, usually ending in /v1)?"
        )
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return f"the endpoint refused the API key (HTTP {exc.status_code}): set SLUICE_LLM__API_KEY"
    return None


async def check_endpoint(cfg: LLMSettings) -> EndpointCheck:
    """Probe `cfg`'s endpoint; never raises for what the endpoint does."""
    out = EndpointCheck()
    if not cfg.base_url:
        out.verdict = "offline"  # the documented default, not a failure
        out.say("endpoint", "none configured")
        out.say(
            "verdict",
            "OFFLINE: analyses use the offline heuristic analyst, as by default; to use an LLM, "
            "set SLUICE_LLM__BASE_URL (and _MODEL, _API_KEY)",
        )
        return out
    key = cfg.api_key.get_secret_value() if cfg.api_key else "no-key"
    client = AsyncOpenAI(base_url=cfg.base_url, api_key=key, timeout=cfg.timeout_s, max_retries=0)
    out.say("endpoint", cfg.base_url)
    try:
        page = await client.with_options(timeout=min(10.0, cfg.timeout_s)).models.list()
        out.models = [m.id for m in page.data]
    except openai.NotFoundError:
        out.say("models", "the server has no /models (some do not): the analysis below decides")
    except Exception as exc:
        problem = _connect_problem(exc, cfg)
        if problem is None:
            problem = f"listing models failed: {type(exc).__name__}"
        out.say("verdict", f"FAILED: {problem}")
        return out
    if out.models is not None:
        served = cfg.model in out.models
        shown = ", ".join(out.models[:10]) + (" ..." if len(out.models) > 10 else "")
        out.say("models", shown or "(none listed)")
        out.say(
            "model",
            f"{cfg.model}: served"
            if served
            else f"{cfg.model} is not in the list: set SLUICE_LLM__MODEL to one of them "
            "(some servers answer any name with their one model)",
        )
    analyst = OpenAIAnalyst(cfg.model_copy(update={"max_retries": 0}), client=client)
    started = time.perf_counter()
    analysis = await analyst.analyze(_PROBE)
    out.seconds = time.perf_counter() - started
    out.context_window = analyst.context_window
    out.mode = analyst.mode
    prov = analysis.provenance
    out.prompt_tokens, out.completion_tokens = prov.prompt_tokens, prov.completion_tokens
    out.say(
        "context",
        f"{out.context_window} tokens; prompts are cut to fit"
        if out.context_window
        else "not reported by the server: prompts up to SLUICE_LLM__PROMPT_TOKEN_BUDGET "
        f"({cfg.prompt_token_budget}); set SLUICE_LLM__CONTEXT_WINDOW for a small model",
    )
    rejected = analyst.usage.format_rejections
    out.say(
        "structured",
        (out.mode or "not found out (the call failed first)")
        + (f" ({rejected} stronger mode(s) refused by the endpoint)" if rejected else ""),
    )
    if prov.analysis == "llm":
        out.verdict = "ok"
        out.say(
            "analysis",
            f"schema-valid report in {out.seconds:.1f} s, {out.prompt_tokens} prompt + "
            f"{out.completion_tokens} completion tokens",
        )
        out.say("verdict", f"OK: Sluice will use {cfg.model} with structured output {out.mode}")
    elif prov.error_category == "invalid_output":
        out.verdict = "degraded"
        out.say("analysis", f"answered in {out.seconds:.1f} s, but {prov.error}")
        out.say(
            "verdict",
            "DEGRADED: the endpoint works, the model's answers do not fit the schema; reports "
            "fall back to the heuristic (a larger model, or a mode that constrains decoding)",
        )
    else:
        out.say("analysis", f"failed after {out.seconds:.1f} s: {prov.error}")
        hint = {
            "timeout": "raise SLUICE_LLM__TIMEOUT_S (a model on CPU may need 120 or more)",
            "refused": "check SLUICE_LLM__MODEL and the key (the endpoint refused the request)",
        }.get(prov.error_category or "", "see the server's log")
        if "HTTP 404" in (prov.error or ""):
            hint = (
                "nothing answers chat completions at this URL (HTTP 404): SLUICE_LLM__BASE_URL "
                "should be the API's root (usually ending in /v1) and SLUICE_LLM__MODEL a model "
                "it serves"
            )
        elif "HTTP 401" in (prov.error or "") or "HTTP 403" in (prov.error or ""):
            hint = "the endpoint refused the API key: set SLUICE_LLM__API_KEY"
        out.say("verdict", f"FAILED: {prov.error_category}: {hint}")
    await client.close()
    return out
