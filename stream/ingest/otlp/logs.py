"""Log records -> event objects with the keys the JSON event rules read (`ts`, `service`, `host`,
`level`, `message`, `trace_id`, `span_id`), plus `pod`, `namespace`, `container` and the record's
own attributes. A string body with neither a time nor a severity (the collector's file receiver)
is a raw line (`LINE_KEY`) for the plain-text formats; a key-value body is compact JSON."""

from __future__ import annotations

from typing import Any

from sluice.stream.errors import ParseError
from sluice.stream.ingest.otlp.values import (
    Common,
    Resource,
    SignalReader,
    json_int,
    json_value,
    name,
    pb_value,
    seconds,
    text,
)

#: An item key: the message is a raw line for the plain-text formats (`stream.ingest.parsing`).
LINE_KEY = "_line"
_SEVERITY = ((4, "TRACE"), (8, "DEBUG"), (12, "INFO"), (16, "WARN"), (20, "ERROR"), (24, "FATAL"))


def _level(number: int | None, words: Any) -> str | None:
    if number:
        for top, level in _SEVERITY:
            if number <= top:
                return level
    word = name(words)
    return word.upper() if word else None


def _item(
    res: Resource,
    common: Common,
    time_ns: int | None,
    observed_ns: int | None,
    severity: str | None,
    body: Any,
) -> list[dict[str, Any]]:
    if body is None or body == "":
        raise ParseError("a log record without a body")
    item = res.fields()
    for k, v in common.attrs.items():
        item.setdefault(k, text(v))  # the record's own attributes, never over the resource's
    ts = seconds(time_ns) or seconds(observed_ns)
    item["message"] = body if isinstance(body, str) else text(body)
    if isinstance(body, str) and not time_ns and not severity:
        item[LINE_KEY] = True  # a raw line (the collector's file receiver): the formats read it
    if ts is not None:
        item["ts"] = ts
    if severity:
        item["level"] = severity
    if common.trace_id:
        item["trace_id"] = common.trace_id
    if common.span_id:
        item["span_id"] = common.span_id
    return [item]


def _from_json(res: Resource, rec: Any) -> list[dict[str, Any]]:
    common = Common.of_json(rec)
    number = rec.get("severityNumber")
    if isinstance(number, str) and number.startswith("SEVERITY_NUMBER_"):  # protobuf's mapping
        severity = _level(None, rec.get("severityText") or number[16:].rstrip("0123456789"))
    else:
        severity = _level(json_int(number), rec.get("severityText"))
    body = json_value(rec.get("body")) if rec.get("body") is not None else None
    time_ns, observed = json_int(rec.get("timeUnixNano")), json_int(rec.get("observedTimeUnixNano"))
    return _item(res, common, time_ns, observed, severity, body)


def _from_pb(res: Resource, rec: Any) -> list[dict[str, Any]]:
    common = Common.of_pb(rec)
    severity = _level(rec.severity_number, rec.severity_text)
    body = pb_value(rec.body) if rec.HasField("body") else None
    return _item(res, common, rec.time_unix_nano, rec.observed_time_unix_nano, severity, body)


def _request() -> Any:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    return ExportLogsServiceRequest


LOGS = SignalReader(
    "logs",
    ("resourceLogs", "scopeLogs", "logRecords"),
    ("resource_logs", "scope_logs", "log_records"),
    _request,
    _from_json,
    _from_pb,
)
