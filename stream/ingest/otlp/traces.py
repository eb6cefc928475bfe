"""Spans -> compact records: service (the resource's), operation, kind, trace, span and parent
ids, start (epoch seconds), duration, status and its message, and the span's attributes."""

from __future__ import annotations

from typing import Any

from sluice.stream.errors import ParseError
from sluice.stream.ingest.otlp.values import (
    Common,
    Resource,
    SignalReader,
    bounded,
    hex_id,
    json_enum,
    json_int,
    name,
    text,
)

_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
_STATUS = ("unset", "ok", "error")


def _item(
    res: Resource,
    common: Common,
    operation: Any,
    kind: int | None,
    parent: str | None,
    start_ns: int | None,
    end_ns: int | None,
    status: int | None,
    status_message: Any,
) -> list[dict[str, Any]]:
    op = name(operation)
    if op is None:
        raise ParseError("a span without a name")
    if not start_ns or not end_ns or end_ns < start_ns:
        raise ParseError("a span without a start and an end after it")
    item = res.fields()
    fields = {
        "operation": op,
        "kind": _KINDS[kind] if kind is not None and 0 <= kind < len(_KINDS) else None,
        "parent_span_id": parent,
        "start": start_ns / 1e9,
        "duration_s": (end_ns - start_ns) / 1e9,
        "status": _STATUS[status] if status is not None and 0 <= status < len(_STATUS) else None,
        "status_message": bounded(status_message)
        if isinstance(status_message, str) and status_message else None,
    }  # fmt: skip
    item.update({k: v for k, v in fields.items() if v is not None})
    item["trace_id"], item["span_id"] = common.trace_id, common.span_id
    item["attributes"] = {k: text(v) for k, v in common.attrs.items()}
    return [item]


def _from_json(res: Resource, rec: Any) -> list[dict[str, Any]]:
    common = Common.of_json(rec)
    status = rec.get("status") if isinstance(rec.get("status"), dict) else {}
    kind = json_enum(rec.get("kind"), _KINDS, "SPAN_KIND_")
    code = json_enum(status.get("code"), _STATUS, "STATUS_CODE_")
    return _item(
        res, common, rec.get("name"), kind, hex_id(rec.get("parentSpanId"), 8),
        json_int(rec.get("startTimeUnixNano")), json_int(rec.get("endTimeUnixNano")), code,
        status.get("message"),
    )  # fmt: skip


def _from_pb(res: Resource, rec: Any) -> list[dict[str, Any]]:
    common = Common.of_pb(rec)
    return _item(
        res, common, rec.name, rec.kind, hex_id(rec.parent_span_id, 8), rec.start_time_unix_nano,
        rec.end_time_unix_nano, rec.status.code, rec.status.message,
    )  # fmt: skip


def _request() -> Any:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    return ExportTraceServiceRequest


TRACES = SignalReader(
    "traces",
    ("resourceSpans", "scopeSpans", "spans"),
    ("resource_spans", "scope_spans", "spans"),
    _request,
    _from_json,
    _from_pb,
)
