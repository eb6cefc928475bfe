"""What reading OTLP costs one worker, through the local Kafka, beside JSON events.

One `sluice worker` pinned to one core on the same log lines three ways, in one run: as JSON
events on `events`; as OTLP protobuf export requests on `otlp_logs`, 100 log records a Kafka
record (as the collector's batch processor sends them); as OTLP/JSON requests alike. Rates in
events/s from the filter stage's committed offsets (records x records per request). Then spans:
the Nezha Train-Ticket day's spans as protobuf trace requests on `otlp_spans`, which the worker
folds into edge and service figures (`signals.spans`), in spans/s; and the span decoding rate of
`stream.ingest.otlp` alone on one core (100 spans a request, in-process).

    deploy/local/kafka start && python -m bench.otlp [DATA_DIR]    (also in `make bench`)

DATA_DIR (else SLUICE_DATA_DIR, else ../shared/data) holds the Nezha Train-Ticket logs
(`nezha-trainticket/*/log/`, the layout of the shared data folder). The last line is the figure:
`otlp_proto_to_json_events_ratio R` (target: R >= 1).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.throughput import _env, _measure, _produce, _topics
from sluice.models.training.datasets import nezha_windows
from sluice.stream.errors import ParseError
from sluice.stream.ingest.parsing import parse_event
from sluice.stream.ingest.sources import read_records
from sluice.stream.records import Event

RESULTS = Path(__file__).resolve().parent / "results" / "otlp.json"
PER_REQUEST = 100


def _events(n: int, data_dir: Path | None) -> tuple[list[bytes], list[Event]]:
    """n Nezha records (the windows, replicated) and the events they are, as parsed."""
    raw, events = [], []
    for w in nezha_windows(data_dir):
        for v, key, _src in read_records(str(w), "nezha"):
            try:
                events.append(parse_event(v, key, "unknown", 65536))
            except ParseError:
                continue  # not an event (its header line): not in any variant
            raw.append(v)
    return [raw[i % len(raw)] for i in range(n)], [events[i % len(events)] for i in range(n)]


def _requests(events: list[Event]) -> tuple[list[bytes], list[bytes]]:
    """The events as OTLP logs requests, `PER_REQUEST` a request, grouped by service into
    resources: protobuf, and the same as OTLP/JSON (ids in hex, times as strings)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    proto, js = [], []
    for start in range(0, len(events), PER_REQUEST):
        req = ExportLogsServiceRequest()
        resources: dict[str, Any] = {}
        doc: dict[str, list[Any]] = {}
        for ev in events[start : start + PER_REQUEST]:
            if ev.service not in resources:
                rl = resources[ev.service] = req.resource_logs.add()
                kv = rl.resource.attributes.add()
                kv.key, kv.value.string_value = "service.name", ev.service
                rl.scope_logs.add().scope.name = "bench"
                doc[ev.service] = []
            rec = resources[ev.service].scope_logs[0].log_records.add()
            rec.time_unix_nano = int(ev.ts.timestamp() * 1e9) if ev.ts else 0
            rec.severity_text = ev.level or "INFO"
            rec.body.string_value = ev.message
            record: dict[str, Any] = {
                "timeUnixNano": str(rec.time_unix_nano),
                "severityText": rec.severity_text,
                "body": {"stringValue": ev.message},
            }
            if ev.trace_id and len(ev.trace_id) == 32:
                rec.trace_id = bytes.fromhex(ev.trace_id)
                record["traceId"] = ev.trace_id
            doc[ev.service].append(record)
        proto.append(req.SerializeToString())
        js.append(json.dumps({"resourceLogs": [
            {"resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": service}}]},
             "scopeLogs": [{"scope": {"name": "bench"}, "logRecords": records}]}
            for service, records in doc.items()
        ]}).encode())  # fmt: skip
    return proto, js


def _span_rate(requests: int = 200) -> float:
    """Spans decoded a second on one core, 100 spans a protobuf request."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from sluice.stream.ingest.otlp import decoder

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "ts-order-service"
    scope = rs.scope_spans.add()
    for i in range(PER_REQUEST):
        s = scope.spans.add()
        s.name, s.kind = f"GET /api/v1/orders/{i % 7}", 2
        s.trace_id, s.span_id = bytes(range(1, 17)), (i + 1).to_bytes(8, "big")
        s.parent_span_id = (i + 1000).to_bytes(8, "big")
        s.start_time_unix_nano = 1_700_000_000_000_000_000 + i
        s.end_time_unix_nano = s.start_time_unix_nano + 2_500_000
        a = s.attributes.add()
        a.key, a.value.string_value = "http.method", "GET"
    raw = req.SerializeToString()
    dec = decoder("traces")
    t0 = time.perf_counter()
    spans = sum(len(dec.decode(raw).items) for _ in range(requests))
    return spans / (time.perf_counter() - t0)


def _span_requests(n: int, data_dir: Path | None) -> tuple[list[bytes], int]:
    """Protobuf trace requests of the Nezha Train-Ticket spans (their real parents, as they
    end), `PER_REQUEST` spans each, grouped by pod; replicated to about n spans."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from bench.rca import _span_rows, service_of
    from sluice.models.training.datasets import shared_data_dir

    day = (data_dir or shared_data_dir()) / "nezha-trainticket" / "2023-01-29" / "trace"
    rows: list[dict[str, Any]] = []
    for path in sorted(day.glob("*_trace.csv.gz")):
        rows += _span_rows(path)
        if len(rows) >= n:
            break
    out = []
    for i in range(0, len(rows), PER_REQUEST):
        req = ExportTraceServiceRequest()
        by_pod: dict[str, Any] = {}
        for r in rows[i : i + PER_REQUEST]:
            scope = by_pod.get(r["pod"])
            if scope is None:
                rs = req.resource_spans.add()
                kv = rs.resource.attributes.add()
                kv.key, kv.value.string_value = "service.name", service_of(r["pod"])
                scope = by_pod[r["pod"]] = rs.scope_spans.add()
            s = scope.spans.add()
            s.name, s.kind = r["op"], 2
            s.trace_id, s.span_id = bytes.fromhex(r["trace"]), bytes.fromhex(r["span"])
            if r["parent"]:
                s.parent_span_id = bytes.fromhex(r["parent"])
            s.start_time_unix_nano, s.end_time_unix_nano = r["start"], r["end"]
        out.append(req.SerializeToString())
    spans = len(rows)
    while spans < n:  # the same requests again: the folder sees the same shapes, as at volume
        out += out[: max(1, (n - spans) // PER_REQUEST)]
        spans = len(out) * PER_REQUEST
    return out, min(spans, len(out) * PER_REQUEST)


def main(argv: list[str]) -> None:
    data_dir = Path(argv[0]) if argv else None
    raw, events = _events(100_000, data_dir)
    proto, js = _requests(events)
    tag = uuid.uuid4().hex[:8]
    print(f"one worker, one core, {len(events):,} Nezha log lines three ways "
          f"({PER_REQUEST} records an OTLP request):")  # fmt: skip
    rates: dict[str, Any] = {}
    variants = [
        ("json_events", raw, 1, "SLUICE_TOPICS__EVENTS"),
        ("otlp_proto", proto, PER_REQUEST, "SLUICE_TOPICS__OTLP_LOGS"),
        ("otlp_json", js, PER_REQUEST, "SLUICE_TOPICS__OTLP_LOGS"),
    ]
    for name, values, per, topic_var in variants:
        env = _env(f"{tag}-{name}", 1)
        _topics(env)
        _produce(env[topic_var], values)
        m = _measure(env, len(values), [0], env[topic_var])
        m["events_per_s"] = round(m["events_per_s"] * per)
        m["bytes_per_event"] = round(sum(map(len, values)) / len(events), 1)
        rates[name] = m
        print(f"  {name:12s} {m['events_per_s']:>9,d} events/s  ({m['bytes_per_event']} bytes "
              f"an event on Kafka)", flush=True)  # fmt: skip
    requests, n_spans = _span_requests(300_000, data_dir)
    env = _env(f"{tag}-spans", 1)
    _topics(env)
    _produce(env["SLUICE_TOPICS__OTLP_SPANS"], requests)
    m = _measure(env, len(requests), [0], env["SLUICE_TOPICS__OTLP_SPANS"])
    m["spans_per_s"] = round(m.pop("events_per_s") * n_spans / len(requests))
    rates["otlp_spans"] = m
    print(f"  {'otlp_spans':12s} {m['spans_per_s']:>9,d} spans/s folded into edge and service "
          f"figures ({n_spans:,} Nezha Train-Ticket spans, protobuf)", flush=True)  # fmt: skip
    spans = round(_span_rate())
    print(f"  span decoding: {spans:,} spans/s (one core, in-process)")
    ratio = rates["otlp_proto"]["events_per_s"] / max(1, rates["json_events"]["events_per_s"])
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "otlp", "command": "python -m bench.otlp",
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "events": len(events),
        "per_request": PER_REQUEST, "worker": rates, "span_decoding_per_s": spans,
        "otlp_proto_to_json_events_ratio": round(ratio, 3),
    }, indent=2) + "\n")  # fmt: skip
    print(f"otlp_proto_to_json_events_ratio {ratio:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
