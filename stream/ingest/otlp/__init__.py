"""OTLP as the OpenTelemetry Collector's Kafka exporter writes it: one Kafka record is one
`Export{Logs,Trace,Metrics}ServiceRequest` holding many records, encoded `otlp_proto` (the
exporter's default) or `otlp_json`.

One decoder per signal behind one interface (`decoder(signal)`), in the collector's own shape:
`logs`, `traces` and `metrics` each say where their records are and how one is read (a
`SignalReader`); the decoder walks resources, scopes and records of either encoding and returns
plain items and the reasons for the items it could not read.
Protobuf is read with the OpenTelemetry project's generated classes (`opentelemetry-proto`);
OTLP/JSON by its own rules (lowerCamelCase names, trace and span ids in hex, 64-bit integers as
strings or numbers, enums as numbers, unknown fields ignored), not by protobuf's JSON mapping,
which would read the hex ids as base64.

- Log records become event objects with the keys the JSON event rules read (`ts`, `service`,
  `host`, `level`, `message`, `trace_id`, `span_id`) plus `pod`, `namespace`, `container` and the
  record's own attributes; a string body that carries neither a time nor a severity is a raw
  line (`LINE_KEY`), which the plain-text formats read like any line.
- Spans and metric points become compact records of their own (service, operation, kind,
  parent, start, duration, status / metric name, unit, value or histogram, resource).

Resource attributes name things: the service from `service.name` (not the SDKs' placeholder
`unknown_service:*`), else the Kubernetes workload (`k8s.deployment.name`,
`k8s.statefulset.name`, `k8s.daemonset.name`, `k8s.job.name`, `k8s.container.name`), else the pod
name less its ReplicaSet hashes; the host from `host.name`, else `k8s.node.name`. Values are
bounded (`MAX_VALUE_CHARS`, `MAX_ATTRIBUTES`, `MAX_DEPTH`): a hostile exporter costs bounded work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from sluice.stream.errors import ParseError
from sluice.stream.ingest.otlp.logs import LINE_KEY, LOGS
from sluice.stream.ingest.otlp.metrics import METRICS
from sluice.stream.ingest.otlp.traces import TRACES
from sluice.stream.ingest.otlp.values import (
    MAX_ATTRIBUTES,
    MAX_DEPTH,
    MAX_VALUE_CHARS,
    POD_HASH,
    Resource,
    SignalReader,
    json_attributes,
    listed,
    pb_attributes,
)

__all__ = [
    "ENCODINGS",
    "LINE_KEY",
    "MAX_ATTRIBUTES",
    "MAX_DEPTH",
    "MAX_VALUE_CHARS",
    "POD_HASH",
    "SIGNALS",
    "Decoded",
    "Encoding",
    "OtlpDecoder",
    "Signal",
    "decoder",
    "detect_encoding",
    "is_otlp_json",
]

Signal = Literal["logs", "traces", "metrics"]
Encoding = Literal["otlp_proto", "otlp_json"]
SIGNALS: tuple[Signal, ...] = ("logs", "traces", "metrics")
ENCODINGS: tuple[Encoding, ...] = ("otlp_proto", "otlp_json")
_READERS: dict[Signal, SignalReader] = {"logs": LOGS, "traces": TRACES, "metrics": METRICS}


@dataclass
class Decoded:
    """What one Kafka record held: items, and why the ones that are not among them were left out
    (each reason names the item's position: resource, scope, record)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)


class OtlpDecoder(Protocol):
    """One signal's decoder: one Kafka record (one export request) to items. Raises ParseError
    when the record is not such a request at all (one dead letter for the record)."""

    signal: Signal

    def decode(self, raw: bytes, encoding: Encoding | None = None) -> Decoded: ...

    def decode_json(self, obj: Any, out: Decoded) -> None: ...


def detect_encoding(raw: bytes) -> Encoding:
    """OTLP/JSON starts with `{` (after blanks); protobuf never does with a non-empty request
    (its first byte is field 1's tag, 0x0a)."""
    return "otlp_json" if raw.lstrip()[:1] == b"{" else "otlp_proto"


def is_otlp_json(obj: dict[str, Any]) -> Signal | None:
    """The signal of a parsed JSON object that is an OTLP/JSON request (the collector's Kafka
    exporter with `otlp_json`, or its file exporter's lines), else None."""
    for signal, reader in _READERS.items():
        if isinstance(obj.get(reader.json_path[0]), list):
            return signal
    return None


def decoder(signal: Signal, scope_attribute: str | None = None) -> OtlpDecoder:
    """The decoder of a signal; `scope_attribute` names a resource attribute whose value is the
    analysis scope of every item (`k8s.namespace.name`, `deployment.environment.name`)."""
    return _Decoder(signal, scope_attribute)


class _Decoder:
    """Resources -> scopes -> records of one signal, in either encoding: a record that cannot be
    read is left out with its position, the others go on."""

    def __init__(self, signal: Signal, scope_attribute: str | None) -> None:
        self.signal: Signal = signal
        self._reader = _READERS[signal]
        self._scope = scope_attribute

    def decode(self, raw: bytes, encoding: Encoding | None = None) -> Decoded:
        out = Decoded()
        if (encoding or detect_encoding(raw)) == "otlp_json":
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ParseError(f"invalid OTLP/JSON: {exc}") from None
            self.decode_json(obj, out)
        else:
            self._decode_proto(raw, out)
        return out

    def decode_json(self, obj: Any, out: Decoded) -> None:
        """A parsed OTLP/JSON request (the file exporter's lines come here already parsed)."""
        root, scopes_key, records_key = self._reader.json_path
        if not isinstance(obj, dict) or not isinstance(obj.get(root), list):
            raise ParseError(f"not an OTLP/JSON {self.signal} request (no {root} list)")
        for r, rs in enumerate(obj[root]):
            resource = rs.get("resource") if isinstance(rs, dict) else None
            if not isinstance(rs, dict) or not isinstance(resource or {}, dict):
                out.dead.append(f"resource {r}: not an object")
                continue
            try:
                res = Resource.of(json_attributes((resource or {}).get("attributes")), self._scope)
            except ParseError as exc:
                out.dead.append(f"resource {r}: {exc}")
                continue
            for s, scope in enumerate(listed(rs.get(scopes_key))):
                records = listed(scope.get(records_key)) if isinstance(scope, dict) else []
                for n, rec in enumerate(records):
                    try:
                        if not isinstance(rec, dict):
                            raise ParseError("not an object")
                        out.items += self._reader.from_json(res, rec)
                    except (ParseError, TypeError, ValueError) as exc:
                        out.dead.append(f"resource {r} scope {s} record {n}: {exc}")

    def _decode_proto(self, raw: bytes, out: Decoded) -> None:
        from google.protobuf.message import DecodeError

        resources, scopes, records = self._reader.pb_path
        try:
            req = self._reader.request().FromString(raw)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise ParseError(f"not an OTLP protobuf {self.signal} request ({exc})") from None
        for r, rs in enumerate(getattr(req, resources)):
            try:
                res = Resource.of(pb_attributes(rs.resource.attributes), self._scope)
            except ParseError as exc:
                out.dead.append(f"resource {r}: {exc}")
                continue
            for s, scope in enumerate(getattr(rs, scopes)):
                for n, rec in enumerate(getattr(scope, records)):
                    try:
                        out.items += self._reader.from_pb(res, rec)
                    except (ParseError, ValueError) as exc:
                        out.dead.append(f"resource {r} scope {s} record {n}: {exc}")
