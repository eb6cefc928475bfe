"""What every signal shares: OTLP's values as plain Python, bounded (AnyValue and attributes
from protobuf and from OTLP/JSON, ids, names), what a resource's attributes say about where its
records come from, and the shape of one signal's reader."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from sluice.stream.errors import ParseError

MAX_VALUE_CHARS = 4096
MAX_ATTRIBUTES = 64
MAX_DEPTH = 16
#: A pod's generated suffix: its ReplicaSet's hash and its own, in Kubernetes' alphabet for them
#: (no vowels, no 0, 1, 3: `checkout-7d9c8b6f5-x2x4q`, `node-exporter-x9z8q`), so that `queue` or
#: `cache` in a name is never taken for one.
POD_HASH = re.compile(
    r"-(?:[bcdfghjklmnpqrstvwxz2456789]{6,10}-)?[bcdfghjklmnpqrstvwxz2456789]{5}$"
)
_WORKLOAD_KEYS = (
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.job.name",
    "k8s.container.name",
)


def seconds(ns: int | None) -> float | None:
    return ns / 1e9 if ns else None


@dataclass
class Common:
    """The fields every record has, read from either encoding."""

    attrs: dict[str, Any]
    trace_id: str | None
    span_id: str | None

    @classmethod
    def of_json(cls, rec: dict[str, Any]) -> Common:
        attrs = json_attributes(rec.get("attributes"))
        return cls(attrs, hex_id(rec.get("traceId"), 16), hex_id(rec.get("spanId"), 8))

    @classmethod
    def of_pb(cls, rec: Any) -> Common:
        return cls(pb_attributes(rec.attributes), hex_id(rec.trace_id, 16), hex_id(rec.span_id, 8))


Read = Callable[["Resource", Any], list[dict[str, Any]]]


@dataclass(frozen=True)
class SignalReader:
    """One signal's shape in both encodings: where its records are, and how one is read."""

    signal: str
    json_path: tuple[str, str, str]  # resourceLogs, scopeLogs, logRecords
    pb_path: tuple[str, str, str]  # resource_logs, scope_logs, log_records
    request: Callable[[], Any]  # the generated Export*ServiceRequest class (imported late)
    from_json: Read
    from_pb: Read


def bounded(s: str) -> str:
    return s if len(s) <= MAX_VALUE_CHARS else s[:MAX_VALUE_CHARS] + "…"


def pb_value(v: Any, depth: int = 0) -> Any:
    """An AnyValue (protobuf) as plain Python: str, bool, int, float, list, dict, hex bytes."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return bounded(v.string_value)
    if kind in ("bool_value", "int_value", "double_value"):
        return getattr(v, kind)
    if kind == "bytes_value":
        return bounded(v.bytes_value.hex())
    if depth >= MAX_DEPTH:
        raise ParseError(f"a value nested deeper than {MAX_DEPTH}")
    if kind == "array_value":
        return [pb_value(x, depth + 1) for x in v.array_value.values[:MAX_ATTRIBUTES]]
    return {kv.key: pb_value(kv.value, depth + 1) for kv in v.kvlist_value.values[:MAX_ATTRIBUTES]}


def json_int(v: Any) -> int | None:
    """A 64-bit integer of OTLP/JSON: a number, or a string of digits."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.lstrip("-").isdigit():
        return int(v)
    if isinstance(v, float) and math.isfinite(v):
        return int(v)
    return None


def json_value(v: Any, depth: int = 0) -> Any:
    """An AnyValue (OTLP/JSON) as plain Python."""
    if not isinstance(v, dict):
        return None
    if "stringValue" in v:
        s = v["stringValue"]
        return bounded(s) if isinstance(s, str) else None
    if "boolValue" in v:
        return v["boolValue"] if isinstance(v["boolValue"], bool) else None
    if "intValue" in v:
        return json_int(v["intValue"])
    if "doubleValue" in v:
        d = v["doubleValue"]
        return float(d) if isinstance(d, int | float) and not isinstance(d, bool) else None
    if "bytesValue" in v:
        b = v["bytesValue"]
        return bounded(b) if isinstance(b, str) else None
    if depth >= MAX_DEPTH:
        raise ParseError(f"a value nested deeper than {MAX_DEPTH}")
    if "arrayValue" in v:
        values = (v["arrayValue"] or {}).get("values") or []
        return [json_value(x, depth + 1) for x in listed(values)[:MAX_ATTRIBUTES]]
    if "kvlistValue" in v:
        values = (v["kvlistValue"] or {}).get("values") or []
        return json_attributes(values, depth + 1)
    return None


def json_enum(v: Any, names: tuple[str, ...], prefix: str) -> int | None:
    """An enum of OTLP/JSON: a number by the spec; protobuf's JSON mapping writes its name."""
    if isinstance(v, str) and v.startswith(prefix):
        name = v[len(prefix) :].lower()
        return names.index(name) if name in names else None
    return json_int(v)


def listed(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def json_attributes(kvs: Any, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in listed(kvs)[:MAX_ATTRIBUTES]:
        if isinstance(kv, dict) and isinstance(kv.get("key"), str):
            out[bounded(kv["key"])] = json_value(kv.get("value"), depth)
    return out


def pb_attributes(kvs: Iterable[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n, kv in enumerate(kvs):
        if n >= MAX_ATTRIBUTES:
            break
        out[bounded(kv.key)] = pb_value(kv.value)
    return out


def text(v: Any) -> str:
    """An attribute or body value as text: strings as they are, others as compact JSON."""
    if isinstance(v, str):
        return v
    return bounded(orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS).decode())


def name(v: Any) -> str | None:
    """A value usable as a name (service, host, pod): a non-blank string, else None."""
    return v.strip()[:200] or None if isinstance(v, str) else None


_HEX = re.compile(r"[0-9a-fA-F]+")


def hex_id(v: Any, size: int) -> str | None:
    """A trace or span id: hex of `size` bytes, not all zero (OTLP's "no id")."""
    if isinstance(v, bytes):  # protobuf's
        return v.hex() if len(v) == size and any(v) else None
    if not isinstance(v, str) or len(v) != 2 * size or not _HEX.fullmatch(v):
        return None
    return v.lower() if v.strip("0") else None


@dataclass
class Resource:
    """What a resource's attributes say about where its records come from."""

    service: str | None
    host: str | None
    pod: str | None
    namespace: str | None
    container: str | None
    scope: str | None

    @classmethod
    def of(cls, attrs: dict[str, Any], scope_attribute: str | None) -> Resource:
        service = name(attrs.get("service.name"))
        if service is not None and service.startswith("unknown_service"):
            service = None  # the SDKs' placeholder names nothing
        pod = name(attrs.get("k8s.pod.name"))
        if service is None:
            service = next(filter(None, (name(attrs.get(k)) for k in _WORKLOAD_KEYS)), None)
        if service is None and pod is not None:
            service = POD_HASH.sub("", pod) or pod
        return cls(
            service=service,
            host=name(attrs.get("host.name")) or name(attrs.get("k8s.node.name")),
            pod=pod,
            namespace=name(attrs.get("k8s.namespace.name")),
            container=name(attrs.get("k8s.container.name")),
            scope=name(attrs.get(scope_attribute)) if scope_attribute else None,
        )

    def fields(self) -> dict[str, Any]:
        """The keys every item of this resource carries (only those it has)."""
        out = {
            "service": self.service,
            "host": self.host,
            "pod": self.pod,
            "namespace": self.namespace,
            "container": self.container,
            "scope": self.scope,
        }
        return {k: v for k, v in out.items() if v is not None}
