"""What an OpenAI-compatible server accepts, found out rather than assumed: the structured-output
modes in the order they are tried (`MODES`; a refusal of `response_format` moves to the next,
and the mode that worked is kept per endpoint and model), the schema each mode sends (with
llama.cpp's grammar bounded, `_Schema`), and the context window (reported by the server,
else learnt from its refusal of an overlong prompt).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import openai
from openai import AsyncOpenAI

from sluice.models.analyst._config import LLMSettings, StructuredMode

if TYPE_CHECKING:
    pass
from sluice.models.analyst._schema import (
    each_schema_node,
)

__all__ = ["MODES", "est_tokens"]


#: The structured-output modes, strongest first (`LLMSettings.structured_output`).
MODES: tuple[StructuredMode, ...] = ("json_schema", "json_object_schema", "json_object", "text")


#: The mode that worked, per (base_url, model), for every analyst of the process.
_NEGOTIATED: dict[tuple[str, str], StructuredMode] = {}


#: Counted tokens are cl100k's; a local model's tokenizer may need more for the same text
#: (numbers, ids, other scripts), so a context window is filled to 1/_TOKENIZER_SLACK only.
_TOKENIZER_SLACK = 1.3


_CONTEXT_KEYS = ("max_model_len", "context_length", "context_window", "max_context_length", "n_ctx")


class _FormatRejected(Exception):
    """The endpoint refused the request's `response_format`: a mode it does not support."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class _ContextExceeded(Exception):
    """The prompt did not fit the model's context window; `window` where the error names it."""

    def __init__(self, window: int | None) -> None:
        super().__init__(f"context window {window}")
        self.window = window


#: How OpenAI, vLLM, llama-cpp-python and llama.cpp word an overlong prompt (HTTP 400).
_CONTEXT_ERROR = re.compile(
    r"maximum context length is (\d+)|context window of (\d+)|context_length_exceeded"
    r"|exceeds the available context size|context size \(?(\d+)",
    re.IGNORECASE,
)


def _context_exceeded(exc: openai.APIStatusError) -> _ContextExceeded | None:
    if exc.status_code not in (400, 413, 422):
        return None
    m = _CONTEXT_ERROR.search(f"{exc.message} {exc.body}")
    if m is None:
        return None
    number = next((g for g in m.groups() if g), None)
    return _ContextExceeded(int(number) if number else None)


def _rejects_format(exc: openai.APIStatusError) -> bool:
    """400 or 422, or a 500 as llama-cpp-python sends it, whose body names the response format."""
    if exc.status_code not in (400, 422, 500):
        return False
    text = f"{exc.message} {exc.body}"
    return "response_format" in text or "json_schema" in text


#: Bounds in the grammar a server makes of the schema (json_object_schema): a small model's
#: string or list then ends before the token limit instead of running into it.
_GRAMMAR_MAX_STRING = 200


_GRAMMAR_MAX_ITEMS = 5
#: Edges a grammar lists as pairs (beyond, each end is one of the bundle's callers, callees).
_GRAMMAR_MAX_EDGES = 30


@dataclass(frozen=True)
class _Schema:
    name: str
    schema: dict[str, Any]
    verdict_def: str  # the $defs entry of one verdict, and its id property
    id_key: str

    def response_format(
        self,
        mode: StructuredMode,
        ids: Sequence[str],
        services: Sequence[str] = (),
        edges: Sequence[tuple[str, str]] = (),
    ) -> dict[str, Any] | None:
        if mode == "json_schema":
            spec = {"name": self.name, "strict": True, "schema": self.schema}
            return {"type": "json_schema", "json_schema": spec}
        if mode == "json_object_schema":  # llama.cpp's form: decoding constrained to the schema
            return {"type": "json_object", "schema": self.bounded(ids, services, edges)}
        if mode == "json_object":
            return {"type": "json_object"}
        return None

    def bounded(
        self,
        ids: Sequence[str],
        services: Sequence[str] = (),
        edges: Sequence[tuple[str, str]] = (),
    ) -> dict[str, Any]:
        """The schema as a grammar: strings and lists bounded, one verdict per id asked for and
        no other id; where the bundle's `services` are given, a service named is one of them,
        and a graph edge's ends are callers and callees of its `edges` (none without edges): a
        small model cannot write a service that is not there (strict `json_schema` takes no
        such bounds everywhere: pydantic and the grounding check check)."""
        schema: dict[str, Any] = json.loads(json.dumps(self.schema))
        if services:
            _only_services(schema, services, edges)

        def bound(node: dict[str, Any]) -> None:
            if node.get("type") == "string" and "enum" not in node:
                node.setdefault("maxLength", _GRAMMAR_MAX_STRING)
            if node.get("type") == "array":
                node.setdefault("maxItems", _GRAMMAR_MAX_ITEMS)

        each_schema_node(schema, bound)
        verdict = schema["$defs"][self.verdict_def]["properties"][self.id_key]
        if ids:  # (an empty enum is a grammar llama.cpp cannot parse)
            verdict.pop("maxLength", None)
            verdict["enum"] = list(ids)
        schema["properties"]["verdicts"].update(minItems=len(ids), maxItems=len(ids))
        return schema

    def prompt_note(self, mode: StructuredMode) -> str:
        """Where the endpoint does not get the schema as such, the prompt carries it."""
        if mode in ("json_object", "text"):
            return "\n\nJSON Schema of the answer:\n" + json.dumps(self.schema)
        return ""


def _only_services(
    schema: dict[str, Any], services: Sequence[str], edges: Sequence[tuple[str, str]]
) -> None:
    defs = schema.get("$defs", {})
    for name in ("AffectedService", "RootCause"):
        if name in defs:
            defs[name]["properties"]["service"] = {"type": "string", "enum": list(services)}
    graph = schema["properties"].get("service_graph")
    if graph is None or "GraphEdge" not in defs:
        return
    if not edges:
        graph["maxItems"] = 0
        return
    if len(edges) <= _GRAMMAR_MAX_EDGES:  # each edge one of the bundle's, as a pair
        evidence = {"type": "string", "maxLength": _GRAMMAR_MAX_STRING}
        graph["items"] = {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {"source": {"const": a}, "target": {"const": b},
                                   "evidence": evidence},
                    "required": ["source", "target", "evidence"],
                    "additionalProperties": False,
                }
                for a, b in edges
            ]
        }  # fmt: skip
        return
    ends = defs["GraphEdge"]["properties"]
    ends["source"] = {"type": "string", "enum": sorted({a for a, _ in edges})}
    ends["target"] = {"type": "string", "enum": sorted({b for _, b in edges})}


def est_tokens(messages: Sequence[dict[str, str]], counter: Any) -> int:
    """Counted tokens of a request's messages (cl100k), with a few per message for the roles."""
    return sum(counter.count(m["content"]) + 4 for m in messages)


async def _probe_context(client: AsyncOpenAI, cfg: LLMSettings) -> int | None:
    """The model's context window where the server reports it, else None."""
    client = client.with_options(timeout=min(5.0, cfg.timeout_s), max_retries=0)
    page = await client.models.list()
    for m in page.data:
        if m.id != cfg.model and len(page.data) > 1:
            continue
        info = m.to_dict()
        for where in (info, info.get("meta") or {}):
            for key in _CONTEXT_KEYS:
                value = where.get(key) if isinstance(where, dict) else None
                if isinstance(value, int) and value > 0:
                    return value
    root = str(client.base_url).rstrip("/").removesuffix("/v1")
    try:  # llama.cpp's own server
        props = await client.with_options(base_url=root).get("/props", cast_to=object)
    except openai.APIStatusError:
        return None
    settings = props.get("default_generation_settings") if isinstance(props, dict) else None
    n = settings.get("n_ctx") if isinstance(settings, dict) else None
    return n if isinstance(n, int) and n > 0 else None


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
