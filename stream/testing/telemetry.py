"""Synthetic spans and metrics of a small service graph, with faults injected: OTLP/JSON requests
as a collector's Kafka exporter writes them (`otlp_json`), for tests of the root-cause evidence.

Every trace starts at the graph's entry service and walks every edge once: a caller's server
span holds one client span per callee, whose only child is the callee's server span. The time
outside the callee (the client span less the server span) is the network, about a millisecond;
a `network_delay` fault adds to it on the calls into its service. A `cpu` fault multiplies its
service's own work (the server span's self time) and its CPU gauge; an `error` fault fails its
service's server spans (status error).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

__all__ = ["GRAPH", "Fault", "telemetry_records"]

#: caller -> callees: the entry is `frontend`.
GRAPH: Mapping[str, Sequence[str]] = {
    "frontend": ("cart", "currency", "catalog"),
    "cart": ("redis",),
    "currency": (),
    "catalog": (),
    "redis": (),
}
#: Each service's own work per request, seconds (the median).
_WORK = {"frontend": 0.004, "cart": 0.002, "currency": 0.001, "catalog": 0.003, "redis": 0.0005}
_NETWORK = 0.001


@dataclass(frozen=True)
class Fault:
    kind: Literal["network_delay", "cpu", "error"]
    service: str
    start: float  # epoch seconds
    end: float
    amount: float = 0.2  # network_delay: seconds added; cpu: factor on self time and CPU


def _attrs(**kv: str) -> list[dict[str, Any]]:
    return [{"key": k, "value": {"stringValue": v}} for k, v in kv.items()]


class _Trace:
    def __init__(self, rng: random.Random, at: float, faults: Sequence[Fault]) -> None:
        self.rng, self.faults = rng, [f for f in faults if f.start <= at < f.end]
        self.trace_id = f"{rng.getrandbits(128):032x}"
        self.spans: list[tuple[str, dict[str, Any]]] = []  # service, span

    def _fault(self, kind: str, service: str) -> Fault | None:
        return next((f for f in self.faults if f.kind == kind and f.service == service), None)

    def _span(
        self, service: str, name: str, span_id: str, parent: str | None, start: float,
        end: float, failed: bool = False,
    ) -> None:  # fmt: skip
        span: dict[str, Any] = {
            "traceId": self.trace_id,
            "spanId": span_id,
            "name": name,
            "kind": 2 if name.startswith("serve") else 3,
            "startTimeUnixNano": str(int(start * 1e9)),
            "endTimeUnixNano": str(int(end * 1e9)),
        }
        if parent:
            span["parentSpanId"] = parent
        if failed:
            span["status"] = {"code": 2, "message": "internal error"}
        self.spans.append((service, span))

    def _id(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"

    def serve(self, service: str, start: float, parent: str | None) -> float:
        """The service's server span from `start` (its calls inside it), after its children as
        an exporter sends them; returns its end."""
        cpu = self._fault("cpu", service)
        work = _WORK[service] * self.rng.lognormvariate(0, 0.2) * (cpu.amount if cpu else 1.0)
        server_id = self._id()
        t = start + work / 2
        for callee in GRAPH[service]:
            delay = self._fault("network_delay", callee)
            net = _NETWORK * self.rng.lognormvariate(0, 0.2) + (delay.amount if delay else 0.0)
            client_id = self._id()
            callee_end = self.serve(callee, t + net / 2, client_id)
            self._span(service, f"call {callee}", client_id, server_id, t, callee_end + net / 2)
            t = callee_end + net / 2
        end = t + work / 2
        failed = self._fault("error", service) is not None
        self._span(service, f"serve {service}", server_id, parent, start, end, failed)
        return end


def _request(spans: Sequence[tuple[str, dict[str, Any]]]) -> bytes:
    by_service: dict[str, list[dict[str, Any]]] = {}
    for service, span in spans:
        by_service.setdefault(service, []).append(span)
    return orjson.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": _attrs(**{"service.name": s})},
                    "scopeSpans": [{"spans": items}],
                }
                for s, items in by_service.items()
            ]
        }
    )


def _metrics(at: float, faults: Sequence[Fault], rng: random.Random) -> bytes:
    t = str(int(at * 1e9))
    out = []
    for service in GRAPH:
        now = [f for f in faults if f.start <= at < f.end]
        cpu = next((f for f in now if f.kind == "cpu" and f.service == service), None)
        value = 0.2 * rng.lognormvariate(0, 0.05) * (cpu.amount if cpu else 1.0)
        point = {"timeUnixNano": t, "asDouble": value}
        metric = {"name": "container.cpu.utilization", "gauge": {"dataPoints": [point]}}
        out.append(
            {
                "resource": {"attributes": _attrs(**{"service.name": service})},
                "scopeMetrics": [{"metrics": [metric]}],
            }
        )
    return orjson.dumps({"resourceMetrics": out})


def telemetry_records(
    start: float,
    seconds: float,
    faults: Sequence[Fault] = (),
    traces_per_s: float = 4.0,
    metrics_every_s: float = 15.0,
    seed: int = 0,
) -> list[tuple[float, bytes]]:
    """(time, OTLP/JSON request) in time order: a request of spans a second, as they end, and
    a request of CPU gauges every `metrics_every_s`."""
    rng = random.Random(seed)
    out: list[tuple[float, bytes]] = []
    step = 1.0 / traces_per_s
    second: list[tuple[str, dict[str, Any]]] = []
    mark = start + 1.0
    t = start
    next_metrics = start
    while t < start + seconds:
        if t >= next_metrics:
            out.append((next_metrics, _metrics(next_metrics, faults, rng)))
            next_metrics += metrics_every_s
        trace = _Trace(rng, t, faults)
        trace.serve("frontend", t, None)
        second += trace.spans
        t += step * rng.uniform(0.5, 1.5)
        if t >= mark:
            out.append((mark, _request(second)))
            second, mark = [], mark + 1.0
    if second:
        out.append((mark, _request(second)))
    return out
