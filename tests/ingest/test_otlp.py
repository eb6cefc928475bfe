"""OTLP decoding, both encodings, all three signals: what the collector's Kafka exporter writes
becomes events (logs) and compact records (spans, metric points) with the service, pod,
namespace, time and level the resource and the record say; malformed requests are dead letters
with reasons, never a crash. The real collector's records: tests/ingest/test_collector_kafka.py."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from sluice.models.filter import KeywordFilter
from sluice.stream.errors import ParseError
from sluice.stream.filtering.screen import screen_batch
from sluice.stream.ingest.otlp import LINE_KEY, MAX_VALUE_CHARS, decoder, detect_encoding
from sluice.stream.ingest.parsing import parse_batch
from sluice.stream.settings import PipelineSettings, TextSettings
from tests.support.hostile import Hostile, otlp_corpus

TRACE = "5b8efff798038103d269b633813fc60c"
SPAN = "eee19b7ec3c1b174"
T_NS = 1_717_228_800_000_000_000  # 2024-06-01T08:00:00Z


def _kv(attrs: list[KeyValue], **values: Any) -> None:
    for k, v in values.items():
        kv = attrs.add()
        kv.key = k.replace("_", ".")
        if isinstance(v, str):
            kv.value.string_value = v
        else:
            kv.value.int_value = v


def logs_request() -> ExportLogsServiceRequest:
    """The issue's record: a batch of two log records from service `checkout`, one ERROR."""
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    _kv(rl.resource.attributes, service_name="checkout", host_name="node-7")
    kv = rl.resource.attributes.add()
    kv.key, kv.value.string_value = "k8s.pod.name", "checkout-7d9c8b6f5-x2x4q"
    kv = rl.resource.attributes.add()
    kv.key, kv.value.string_value = "k8s.namespace.name", "shop"
    sl = rl.scope_logs.add()
    for i, (sev, text) in enumerate([(9, "order 1 placed"), (17, "payment refused: 503")]):
        r = sl.log_records.add()
        r.time_unix_nano = T_NS + i * 1_000_000_000
        r.severity_number = sev
        r.body.string_value = text
        r.trace_id = bytes.fromhex(TRACE)
        r.span_id = bytes.fromhex(SPAN)
        kv = r.attributes.add()
        kv.key, kv.value.int_value = "http.status_code", 503
    return req


def logs_json() -> bytes:
    """The same batch as OTLP/JSON, as the exporter writes it (ids in hex, 64-bit integers as
    strings), with a field this release does not know."""
    return json.dumps({"resourceLogs": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "checkout"}},
            {"key": "k8s.pod.name", "value": {"stringValue": "checkout-7d9c8b6f5-x2x4q"}},
            {"key": "k8s.namespace.name", "value": {"stringValue": "shop"}},
        ]},
        "scopeLogs": [{"scope": {"name": "app"}, "logRecords": [
            {"timeUnixNano": str(T_NS), "severityNumber": 9,
             "body": {"stringValue": "order 1 placed"}, "traceId": TRACE.upper(), "spanId": SPAN,
             "attributes": [
                 {"key": "http.status_code", "value": {"intValue": "503"}}]},
            {"timeUnixNano": T_NS + 10**9, "severityText": "Error", "futureField": {"x": 1},
             "body": {"stringValue": "payment refused: 503"}},
        ]}],
    }]}).encode()  # fmt: skip


def test_protobuf_logs_name_service_pod_namespace_time_level_and_trace() -> None:
    raw = logs_request().SerializeToString()
    assert detect_encoding(raw) == "otlp_proto"
    out = decoder("logs").decode(raw)
    assert out.dead == []
    info, error = out.items
    assert info["service"] == error["service"] == "checkout"
    assert info["pod"] == "checkout-7d9c8b6f5-x2x4q" and info["namespace"] == "shop"
    assert info["host"] == "node-7"
    assert (info["level"], error["level"]) == ("INFO", "ERROR")
    assert info["ts"] == T_NS / 1e9 and error["ts"] == T_NS / 1e9 + 1
    assert error["message"] == "payment refused: 503" and LINE_KEY not in error
    assert error["trace_id"] == TRACE and error["span_id"] == SPAN
    assert error["http.status_code"] == "503"


def test_otlp_json_logs_read_by_its_own_rules() -> None:
    raw = logs_json()
    assert detect_encoding(raw) == "otlp_json"
    out = decoder("logs").decode(raw)
    assert out.dead == []
    info, error = out.items
    assert info["trace_id"] == TRACE  # hex, not base64
    assert info["http.status_code"] == "503" and info["ts"] == T_NS / 1e9
    assert (info["level"], error["level"]) == ("INFO", "ERROR")
    assert error["ts"] == T_NS / 1e9 + 1 and "futureField" not in error
    assert {i["service"] for i in out.items} == {"checkout"}


@pytest.mark.parametrize(
    ("attrs", "service", "host"),
    [
        ({"service.name": "unknown_service:python", "k8s.deployment.name": "cart",
          "k8s.node.name": "n1"}, "cart", "n1"),
        ({"k8s.statefulset.name": "db"}, "db", None),
        ({"k8s.container.name": "web", "k8s.pod.name": "web-5d8f7c9b4-bcdfg"}, "web", None),
        ({"k8s.pod.name": "payment-5d8f7c9b4-bcdfg"}, "payment", None),
        ({"k8s.pod.name": "worker-x9z8q"}, "worker", None),
        ({"service.name": "", "host.name": "h"}, None, "h"),
        ({"k8s.pod.name": "order-queue"}, "order-queue", None),  # not a generated suffix
    ],
)  # fmt: skip
def test_resource_attributes_name_the_service_and_host(
    attrs: dict[str, str], service: str | None, host: str | None
) -> None:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    for k, v in attrs.items():
        kv = rl.resource.attributes.add()
        kv.key, kv.value.string_value = k, v
    rec = rl.scope_logs.add().log_records.add()
    rec.body.string_value = "hello"
    (item,) = decoder("logs").decode(req.SerializeToString()).items
    assert item.get("service") == service and item.get("host") == host


def test_a_text_body_without_time_or_severity_is_a_raw_line_and_kv_bodies_are_compact() -> None:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    line = sl.log_records.add()
    line.observed_time_unix_nano = T_NS  # the file receiver sets only this
    line.body.string_value = "2024-06-01 08:00:00,123 ERROR [pay] connection refused"
    kv = sl.log_records.add()
    kv.severity_text = "warn"
    entry = kv.body.kvlist_value.values.add()
    entry.key, entry.value.string_value = "event", "slow query"
    raw_line, structured = decoder("logs").decode(req.SerializeToString()).items
    assert raw_line[LINE_KEY] is True and raw_line["ts"] == T_NS / 1e9
    assert structured["message"] == '{"event":"slow query"}' and structured["level"] == "WARN"


def test_the_analysis_scope_can_come_from_a_resource_attribute() -> None:
    (item, _) = decoder("logs", "k8s.namespace.name").decode(logs_json()).items
    assert item["scope"] == "shop"
    (item, _) = decoder("logs").decode(logs_json()).items
    assert "scope" not in item


def test_spans_become_compact_records() -> None:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    _kv(rs.resource.attributes, service_name="frontend")
    s = rs.scope_spans.add().spans.add()
    s.name, s.kind = "GET /cart", 3  # client
    s.trace_id, s.span_id = bytes.fromhex(TRACE), bytes.fromhex(SPAN)
    s.parent_span_id = bytes.fromhex("00f067aa0ba902b7")
    s.start_time_unix_nano, s.end_time_unix_nano = T_NS, T_NS + 250_000_000
    s.status.code, s.status.message = 2, "deadline exceeded"
    _kv(s.attributes, peer_service="cart")
    for raw in (req.SerializeToString(), _as_json(req)):
        (span,) = decoder("traces").decode(raw).items
        assert span["service"] == "frontend" and span["operation"] == "GET /cart"
        assert span["kind"] == "client" and span["status"] == "error"
        assert span["duration_s"] == pytest.approx(0.25) and span["start"] == T_NS / 1e9
        assert span["trace_id"] == TRACE and span["parent_span_id"] == "00f067aa0ba902b7"
        assert span["attributes"] == {"peer.service": "cart"}


def test_metric_points_become_compact_records() -> None:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    _kv(rm.resource.attributes, service_name="cart")
    sm = rm.scope_metrics.add()
    g = sm.metrics.add()
    g.name, g.unit = "process.cpu.utilization", "1"
    p = g.gauge.data_points.add()
    p.time_unix_nano, p.as_double = T_NS, 0.93
    h = sm.metrics.add()
    h.name, h.unit = "http.server.duration", "ms"
    hp = h.histogram.data_points.add()
    hp.time_unix_nano, hp.count, hp.sum = T_NS, 3, 1250.0
    hp.explicit_bounds.extend([100.0, 1000.0])
    hp.bucket_counts.extend([1, 1, 1])
    _kv(hp.attributes, http_route="/cart")
    for raw in (req.SerializeToString(), _as_json(req)):
        gauge, hist = decoder("metrics").decode(raw).items
        assert gauge["service"] == "cart" and gauge["value"] == 0.93 and gauge["type"] == "gauge"
        assert hist["type"] == "histogram" and hist["count"] == 3 and hist["sum"] == 1250.0
        assert hist["bounds"] == [100.0, 1000.0] and hist["counts"] == [1, 1, 1]
        assert hist["unit"] == "ms" and hist["attributes"] == {"http.route": "/cart"}


def _as_json(msg: Any) -> bytes:
    """OTLP/JSON as the collector writes it: protobuf's JSON names, ids in hex."""
    from google.protobuf.json_format import MessageToDict

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (_b64_to_hex(v) if k in ("traceId", "spanId", "parentSpanId") else fix(v))
                    for k, v in node.items()}  # fmt: skip
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return json.dumps(fix(MessageToDict(msg))).encode()


def _b64_to_hex(v: str) -> str:
    import base64

    return base64.b64decode(v).hex()


# -- malformed requests: dead letters with reasons, never a crash --------------------------------


def test_truncated_protobuf_is_one_dead_letter() -> None:
    raw = logs_request().SerializeToString()
    with pytest.raises(ParseError, match="not an OTLP protobuf logs request"):
        decoder("logs").decode(raw[: len(raw) // 2])


def test_a_request_of_another_signal_gives_no_events() -> None:
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add()
    m.name = "x"
    m.gauge.data_points.add().as_double = 1.0
    m.description = "a text where a log record has its time"
    try:
        out = decoder("logs").decode(req.SerializeToString())
    except ParseError as exc:  # protobuf itself refuses it (here: a string that is not UTF-8)
        assert "not an OTLP protobuf logs request" in str(exc)
    else:  # or it parses into records that are none
        assert out.items == [] and out.dead and all("without a body" in d for d in out.dead)
    spans = ExportTraceServiceRequest()
    spans.resource_spans.add().scope_spans.add().spans.add().name = "GET /"
    with pytest.raises(ParseError, match="not an OTLP protobuf logs request"):
        decoder("logs").decode(spans.SerializeToString())


def test_huge_values_are_bounded_invalid_ids_dropped_deep_bodies_refused_alone() -> None:
    req = logs_request()
    records = req.resource_logs[0].scope_logs[0].log_records
    records[0].body.string_value = "x" * (MAX_VALUE_CHARS * 10)
    records[0].trace_id = b"\x00" * 16  # OTLP's "no trace"
    records[1].span_id = b"\x01\x02"  # not 8 bytes
    deep = records.add()
    node = deep.body
    for _ in range(18):  # deeper than MAX_DEPTH, within protobuf's own limit
        node = node.kvlist_value.values.add().value
    node.string_value = "bottom"
    out = decoder("logs").decode(req.SerializeToString())
    assert len(out.items) == 2 and len(out.dead) == 1 and "nested deeper" in out.dead[0]
    assert "record 2" in out.dead[0]
    assert len(out.items[0]["message"]) <= MAX_VALUE_CHARS + 1
    assert "trace_id" not in out.items[0] and "span_id" not in out.items[1]
    for _ in range(40):  # beyond protobuf's limit: the request is refused whole
        node = node.kvlist_value.values.add().value
    node.string_value = "bottom"
    with pytest.raises(ParseError, match="not an OTLP protobuf logs request"):
        decoder("logs").decode(req.SerializeToString())


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"resourceLogs": 3}', b'{"resourceSpans": []}', b"[1, 2]", b'"x"'],
)
def test_otlp_json_that_is_not_a_logs_request_is_one_dead_letter(raw: bytes) -> None:
    with pytest.raises(ParseError):
        decoder("logs").decode(raw, "otlp_json")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_parse_error(raw: bytes) -> None:
    for signal in ("logs", "traces", "metrics"):
        with contextlib.suppress(ParseError):  # a ParseError is a dead letter: fine
            decoder(signal).decode(raw, "otlp_proto")  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["resourceLogs", "resource", "attributes", "scopeLogs", "logRecords",
                             "body", "stringValue", "kvlistValue", "values", "key", "value",
                             "timeUnixNano", "severityNumber", "traceId", "arrayValue"]),
            inner, max_size=4),
        max_leaves=30,
    )
)  # fmt: skip
def test_any_json_shape_decodes_or_raises_parse_error(obj: Any) -> None:
    try:
        raw = json.dumps(obj).encode()
    except ValueError:
        return
    with contextlib.suppress(ParseError):  # a ParseError is a dead letter: fine
        decoder("logs").decode(raw, "otlp_json")


@pytest.mark.parametrize("h", otlp_corpus(), ids=lambda h: h.name)
def test_malformed_otlp_gives_dead_letters_with_reasons_and_the_good_records(h: Hostile) -> None:
    parsed = parse_batch([h.raw], 65536, TextSettings().formats(), stream="otlp_logs",
                         signal="logs")  # fmt: skip
    assert len(parsed.messages) == h.expect["events"], parsed.dead
    reasons = [r for _i, r in parsed.dead]
    assert len(reasons) == len(h.expect["dead"]), reasons
    for want, got in zip(h.expect["dead"], reasons, strict=True):
        assert want in got and got.startswith("OTLP logs"), (want, got)
    assert all(len(m) <= MAX_VALUE_CHARS + 1 for m in parsed.messages)
    screened = screen_batch(
        [h.raw], [None], lambda i: ("otlp_logs", 0, 7), KeywordFilter(["refused"]),
        PipelineSettings(), signal="logs",
    )  # fmt: skip
    assert [d.reason for d in screened.dead] == reasons
    assert all(d.kind == "otlp" and d.offset == 7 for d in screened.dead)
    assert screened.events == h.expect["events"]


def test_on_events_an_otlp_request_is_recognised_and_binary_is_never_a_text_line() -> None:
    """The events topic (and `scan`'s files): OTLP protobuf and OTLP/JSON requests are unpacked,
    binary that is neither UTF-8 nor OTLP is a dead letter; text and JSON events as before."""
    values = [
        logs_request().SerializeToString(),
        logs_json(),
        bytes(range(256)),
        "Zahlung fehlgeschlagen: Gerät".encode("latin-1"),  # not UTF-8, but text: an event
        b'{"service": "cart", "message": "ERROR cart failed"}',
    ]
    parsed = parse_batch(values, 65536, TextSettings().formats(), stream="events")
    assert parsed.index == [0, 0, 1, 1, 3, 4]
    assert parsed.dead == [(2, "binary record: not UTF-8 text, not an OTLP logs request")]
    assert parsed.otlp_records == 2 and parsed.item_of == {0: 0, 1: 1, 2: 0, 3: 1}
    screened = screen_batch(
        values, [None] * 5, lambda i: ("events", 0, i), KeywordFilter(["refused", "failed"]),
        PipelineSettings(audit_rate=1.0),
    )  # fmt: skip
    sources = {s["event"]["source"] for ms in screened.messages.values() for m in ms
               for s in json.loads(m)["suspects"]}  # fmt: skip
    assert {"events:0:0#1", "events:0:1#1"} <= sources  # one offset, the record's position in it
    assert [d.kind for d in screened.dead] == ["binary"]
