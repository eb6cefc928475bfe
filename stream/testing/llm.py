"""`FakeLLM`: an OpenAI-compatible chat-completions server on 127.0.0.1 for tests, with
scriptable failures (the real `openai` client talks to it over HTTP, as to any endpoint).

Each request consumes the next behaviour from `script` (``ok`` when empty):
``ok`` | ``429:<retry-after s>`` | ``500`` | ``slow:<s>`` | ``invalid_json`` | ``schema_violation``
| ``echo_logs`` (an invalid answer quoting the prompt) | ``ungrounded`` (a schema-valid answer
naming a service, an edge and a template the prompt does not hold, `critical` but no incident,
as a small model writes) | ``drop`` (close the connection without answering).
``formats``: the structured-output modes it accepts (others are refused as llama-cpp-python
refuses `json_schema`: HTTP 500 naming `response_format`). ``context_window``: reported in
/v1/models as vLLM does (``report_context``), and a longer prompt is refused with HTTP 400 as
OpenAI words it.
An ``ok`` answer is computed from the request: every template whose text mentions error,
exception or timeout is relevant, and the service with most relevant events is the root cause.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeLLM", "compute_answer", "ungrounded_answer"]

_BLOCK = re.compile(r"^\[(T\d+)\] count=(\d+) .*?services=(\S+)", re.MULTILINE)
_TEMPLATE = re.compile(r"^  template: (.*)$", re.MULTILINE)
_RELEVANT = re.compile(r"error|exception|timeout", re.IGNORECASE)


_TRIAGE_ITEM = re.compile(r"^\[(N\d+)\] template: (.*)$", re.MULTILINE)


def compute_answer(body: dict[str, Any]) -> dict[str, Any]:
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    system = next(m["content"] for m in body["messages"] if m["role"] == "system")
    if system.startswith("You are the triage"):  # new templates: relevant or not, one by one
        return {
            "verdicts": [
                {"id": n, "relevant": bool(_RELEVANT.search(t)), "reason": "by its words"}
                for n, t in _TRIAGE_ITEM.findall(user)
            ]
        }
    blocks = _BLOCK.findall(user)
    templates = _TEMPLATE.findall(user)
    verdicts, per_service = [], Counter[str]()
    for (tid, _count, services), template in zip(blocks, templates, strict=False):
        relevant = bool(_RELEVANT.search(template))
        verdicts.append({"template_id": tid, "relevant": relevant})
        if relevant:
            for part in services.split(","):
                name, _, n = part.rpartition("(")
                per_service[name] += int(n.rstrip(")"))
    ranked = [s for s, _ in per_service.most_common()]
    root = ranked[0] if ranked else None
    return {
        "is_incident": root is not None,
        "severity": "high" if root else "info",
        "title": f"errors in {root}" if root else "no incident",
        "summary": f"{sum(per_service.values())} relevant events",
        "affected_services": [
            {"service": s, "role": "root_cause" if s == root else "impacted", "evidence": "logs"}
            for s in ranked
        ],
        "service_graph": [],
        "root_causes": (
            [{"service": root, "description": "most errors", "confidence": 0.7}] if root else []
        ),
        "recommendations": [f"restart {root}"] if root else [],
        "verdicts": verdicts,
    }


def ungrounded_answer(body: dict[str, Any]) -> dict[str, Any]:
    """`compute_answer`'s verdicts in a report about things that are not there."""
    answer = compute_answer(body)
    answer.update(
        is_incident=False,
        severity="critical",
        title="The log data is not a report of an incident",
        affected_services=[
            {"service": "T1", "role": "root_cause", "evidence": "T99"},
            {"service": "ts-basic-service}, {", "role": "impacted", "evidence": "T1"},
        ],
        service_graph=[{"source": "ts-order-data.json", "target": "T1", "evidence": "T99"}],
        root_causes=[{"service": "T1", "description": "see T99", "confidence": 0.9}],
    )
    return answer


class FakeLLM:
    def __init__(self) -> None:
        self.script: deque[str] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.down_until = 0.0  # time.monotonic() before which every call answers 500
        self.formats = {"json_schema", "json_object_schema", "json_object", "text"}
        self.context_window: int | None = None
        self.report_context = True
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, payload: dict[str, Any], extra: dict[str, str]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/v1/models":
                    self._send(404, {"error": {"message": "not found"}}, {})
                    return
                model: dict[str, Any] = {"id": "fake-model", "object": "model", "owned_by": "t"}
                if fake.context_window and fake.report_context:
                    model["max_model_len"] = fake.context_window
                self._send(200, {"object": "list", "data": [model]}, {})

            def _refusal(self, body: dict[str, Any]) -> tuple[int, str] | None:
                fmt = body.get("response_format")
                mode = (
                    "text" if fmt is None
                    else "json_object_schema" if fmt["type"] == "json_object" and "schema" in fmt
                    else fmt["type"]
                )  # fmt: skip
                if mode not in fake.formats:
                    return 500, (
                        "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
                        "'msg': \"Input should be 'text' or 'json_object'\"}]"
                    )
                prompt = len(json.dumps(body["messages"])) // 4
                if fake.context_window and prompt + body.get("max_tokens", 0) > fake.context_window:
                    return 400, (
                        f"This model's maximum context length is {fake.context_window} tokens. "
                        f"However, you requested {prompt + body.get('max_tokens', 0)} tokens."
                    )
                return None

            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "not found"}}, {})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                if refusal := self._refusal(body):
                    status, message = refusal
                    self._send(status, {"error": {"message": message, "code": status}}, {})
                    return
                mode = fake.script.popleft() if fake.script else "ok"
                if time.monotonic() < fake.down_until:  # an outage: every call fails
                    mode = "500"
                if mode == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if mode.startswith("429"):
                    after = mode.split(":", 1)[1] if ":" in mode else "1"
                    err = {"error": {"message": "rate limited", "type": "rate_limit"}}
                    self._send(429, err, {"Retry-After": after})
                    return
                if mode == "500":
                    self._send(500, {"error": {"message": "boom", "type": "server_error"}}, {})
                    return
                if mode.startswith("slow:"):
                    time.sleep(float(mode.split(":", 1)[1]))
                if body.get("max_tokens") == 1:  # a one-token probe: is anyone there?
                    content = "OK"
                elif mode == "invalid_json":
                    content = "Sure! Here is the analysis: {not json"
                elif mode == "echo_logs":  # an answer that repeats the log text back
                    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
                    content = json.dumps({"is_incident": user[:3000], user[-200:]: "x"})
                elif mode == "schema_violation":
                    content = json.dumps({"is_incident": "maybe", "severity": "apocalyptic"})
                elif mode == "ungrounded":  # schema-valid, about what the prompt does not hold
                    content = json.dumps(ungrounded_answer(body))
                else:
                    content = json.dumps(compute_answer(body))
                prompt_tokens = len(json.dumps(body["messages"])) // 4
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{len(fake.requests)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "fake"),
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": content},
                            }
                        ],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": 120,
                            "total_tokens": prompt_tokens + 120,
                        },
                    },
                    {},
                )

        return Handler
