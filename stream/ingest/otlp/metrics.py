"""Metric points -> compact records: service (the resource's), metric name, unit, type (gauge,
sum, histogram, exponential_histogram, summary), time, and the value, or count, sum and buckets,
with the point's attributes. At most `MAX_POINTS` points a metric."""

from __future__ import annotations

from typing import Any, TypeGuard

from sluice.stream.errors import ParseError
from sluice.stream.ingest.otlp.values import (
    MAX_ATTRIBUTES,
    Resource,
    SignalReader,
    json_attributes,
    json_int,
    listed,
    name,
    pb_attributes,
    seconds,
    text,
)

MAX_POINTS = MAX_ATTRIBUTES * 16
_TYPES = {"gauge": "gauge", "sum": "sum", "histogram": "histogram",
          "exponentialHistogram": "exponential_histogram", "summary": "summary",
          "exponential_histogram": "exponential_histogram"}  # fmt: skip


def _item(
    res: Resource,
    metric: str,
    unit: Any,
    kind: str,
    time_ns: int | None,
    attrs: dict[str, Any],
    value: dict[str, Any],
) -> dict[str, Any]:
    item = res.fields()
    item.update({"name": metric, "type": _TYPES[kind], "time": seconds(time_ns), **value})
    if isinstance(unit, str) and unit:
        item["unit"] = unit[:50]
    item["attributes"] = {k: text(v) for k, v in attrs.items()}
    return item


def _number(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _json_distribution(p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"count": json_int(p.get("count")) or 0}
    if _number(p.get("sum")):
        out["sum"] = float(p["sum"])
    bounds = [float(b) for b in listed(p.get("explicitBounds"))[:256] if _number(b)]
    counts = [c for c in map(json_int, listed(p.get("bucketCounts"))[:257]) if c is not None]
    if bounds or counts:
        out["bounds"], out["counts"] = bounds, counts
    return out


def _from_json(res: Resource, rec: Any) -> list[dict[str, Any]]:
    metric = name(rec.get("name"))
    if metric is None:
        raise ParseError("a metric without a name")
    out = []
    for kind in ("gauge", "sum", "histogram", "exponentialHistogram", "summary"):
        data = rec.get(kind)
        if not isinstance(data, dict):
            continue
        for p in listed(data.get("dataPoints"))[:MAX_POINTS]:
            if not isinstance(p, dict):
                continue
            value: dict[str, Any]
            if kind in ("gauge", "sum"):
                number = json_int(p.get("asInt")) if "asInt" in p else p.get("asDouble")
                if not _number(number):
                    raise ParseError(f"a {kind} point without a number")
                value = {"value": float(number)}
            else:
                value = _json_distribution(p)
            out.append(_item(res, metric, rec.get("unit"), kind, json_int(p.get("timeUnixNano")),
                             json_attributes(p.get("attributes")), value))  # fmt: skip
    return out


def _from_pb(res: Resource, rec: Any) -> list[dict[str, Any]]:
    metric = name(rec.name)
    if metric is None:
        raise ParseError("a metric without a name")
    kind = rec.WhichOneof("data")
    if kind is None:
        return []
    out = []
    for p in list(getattr(rec, kind).data_points)[:MAX_POINTS]:
        value: dict[str, Any]
        if kind in ("gauge", "sum"):
            which = p.WhichOneof("value")
            if which is None:
                raise ParseError(f"a {kind} point without a number")
            value = {"value": float(getattr(p, which))}
        else:
            value = {"count": int(p.count)}
            if kind == "summary" or p.HasField("sum"):
                value["sum"] = float(p.sum)
            if kind == "histogram":
                value["bounds"] = [float(b) for b in p.explicit_bounds[:256]]
                value["counts"] = [int(c) for c in p.bucket_counts[:257]]
        out.append(_item(res, metric, rec.unit, kind, p.time_unix_nano,
                         pb_attributes(p.attributes), value))  # fmt: skip
    return out


def _request() -> Any:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    return ExportMetricsServiceRequest


METRICS = SignalReader(
    "metrics",
    ("resourceMetrics", "scopeMetrics", "metrics"),
    ("resource_metrics", "scope_metrics", "metrics"),
    _request,
    _from_json,
    _from_pb,
)
