"""A real OpenTelemetry Collector in front of Sluice, as Kafka is: built from the collector's Go
modules (`deploy/local/otelcol`), it tails two log files and exports them to the local Kafka,
one with `otlp_proto` (the exporter's default) and one with `otlp_json`, and passes on the spans
and metrics that the OpenTelemetry Python SDK sends to its OTLP receiver. One worker consumes
the three topics. Asserted: the suspects' services, times, levels and trace ids; an alert naming
the failing service; the span and metric point counts; and `sluice scan` of OTLP/JSON lines (the
collector's file exporter's format) reading the same events."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sluice.stream.records import Alert, read_record
from tests.support.kafka import (
    KafkaEnv,
    free_port,
    http_get,
    read_all,
    read_until,
    running_worker,
    suspects_in,
)

pytestmark = pytest.mark.integration

T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
TRACE = "5b8efff798038103d269b633813fc60c"
SPANS = 7


def _lines(service: str, n: int) -> list[str]:
    """log4j lines, as an app writes them: every other one a failure with its trace id."""
    out = []
    for i in range(n):
        ts = (T0 + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S,") + "123"
        if i % 2:
            out.append(f"{ts} ERROR [main] com.shop.{service.title()}: {service} call {i} failed: "
                       f"connection refused by database trace={TRACE}")  # fmt: skip
        else:
            out.append(f"{ts} INFO [main] com.shop.{service.title()}: {service} request {i} ok")
    return out


def _config(tmp: Path, env: dict[str, str], bootstrap: str, otlp_port: int) -> Path:
    logs = env["SLUICE_TOPICS__OTLP_LOGS"]

    def tail(service: str) -> dict[str, object]:
        return {
            "include": [str(tmp / f"{service}.log")],
            "start_at": "beginning",
            "poll_interval": "100ms",
            "resource": {"service.name": service, "k8s.namespace.name": "shop"},
            "operators": [{
                "type": "regex_parser", "regex": "trace=(?P<trace_id>[0-9a-f]{32})",
                "on_error": "send_quiet",
                "trace": {"trace_id": {"parse_from": "attributes.trace_id"}},
            }],
        }  # fmt: skip

    def kafka(encoding: str) -> dict[str, object]:
        return {
            "brokers": [bootstrap],
            "logs": {"topic": logs, "encoding": encoding},
            "traces": {"topic": env["SLUICE_TOPICS__OTLP_SPANS"], "encoding": "otlp_proto"},
            "metrics": {"topic": env["SLUICE_TOPICS__OTLP_METRICS"], "encoding": "otlp_proto"},
        }

    config = {
        "receivers": {
            "file_log/payment": tail("payment"),
            "file_log/orders": tail("orders"),
            "otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{otlp_port}"}}},
        },
        "exporters": {
            "kafka/proto": kafka("otlp_proto"),
            "kafka/json": kafka("otlp_json"),
        },
        "service": {
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {
                "logs/proto": {"receivers": ["file_log/payment"], "exporters": ["kafka/proto"]},
                "logs/json": {"receivers": ["file_log/orders"], "exporters": ["kafka/json"]},
                "traces": {"receivers": ["otlp"], "exporters": ["kafka/proto"]},
                "metrics": {"receivers": ["otlp"], "exporters": ["kafka/proto"]},
            },
        },
    }  # fmt: skip
    path = tmp / "otelcol.json"  # JSON is YAML: the collector reads it as its config
    path.write_text(json.dumps(config))
    return path


def _send_spans_and_metrics(port: int) -> None:
    """The OpenTelemetry Python SDK, as an instrumented service runs it."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    resource = Resource.create({"service.name": "frontend", "k8s.namespace.name": "shop"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces"))
    )
    tracer = tracer_provider.get_tracer("checkout")
    for i in range(SPANS):
        with tracer.start_as_current_span(f"GET /cart/{i % 2}"):
            pass
    tracer_provider.shutdown()
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"http://127.0.0.1:{port}/v1/metrics"),
        export_interval_millis=60_000,
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    counter = meter_provider.get_meter("checkout").create_counter("requests")
    counter.add(3, {"route": "/cart"})
    meter_provider.shutdown()  # flushes the one export


def _metric(port: int, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    _status, text = http_get(port, "/metrics")
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_a_real_collector_in_front_of_a_worker(
    otelcol: Path, kafka_env: KafkaEnv, kafka_bootstrap: str, tmp_path: Path
) -> None:
    web = free_port()
    env = kafka_env(
        SLUICE_PIPELINE__IDLE_CLOSE_S="3",
        SLUICE_PIPELINE__ALERT_TIME="event",
        SLUICE_PIPELINE__SCOPE_ATTRIBUTE="k8s.namespace.name",
        SLUICE_WORKER__WEB_PORT=str(web),
    )
    otlp_port = free_port()
    config = _config(tmp_path, env, kafka_bootstrap, otlp_port)
    log_path = tmp_path / "worker.log"
    collector_log = tmp_path / "otelcol.log"

    def logs() -> str:
        return (collector_log.read_text(errors="replace")[-3000:] + "\n"
                + log_path.read_text(errors="replace")[-3000:])  # fmt: skip

    with (
        running_worker(env, log_path),
        open(collector_log, "wb") as out,
    ):
        collector = subprocess.Popen(
            [str(otelcol), "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 30
            while http_get(otlp_port, "/")[0] == 0:  # the OTLP receiver listens: started
                assert collector.poll() is None and time.monotonic() < deadline, logs()
                time.sleep(0.2)
            for service in ("payment", "orders"):
                (tmp_path / f"{service}.log").write_text("\n".join(_lines(service, 20)) + "\n")
            _send_spans_and_metrics(otlp_port)

            values = read_until(
                kafka_bootstrap,
                env["SLUICE_TOPICS__SUSPECTS"],
                lambda v: (
                    {s.event.service for s in suspects_in(v)} >= {"payment", "orders"}
                    and len([s for s in suspects_in(v) if s.event.level == "ERROR"]) >= 20
                ),
                90,
                logs,
            )
            alerts = read_until(
                kafka_bootstrap,
                env["SLUICE_TOPICS__ALERTS"],
                lambda v: len(v) >= 1,
                60,
                logs,
            )
            deadline = time.monotonic() + 30
            while _metric(web, "sluice_otlp_items_total", signal="traces") < SPANS:
                assert time.monotonic() < deadline, logs()
                time.sleep(0.5)
            spans = _metric(web, "sluice_otlp_items_total", signal="traces")
            points = _metric(web, "sluice_otlp_items_total", signal="metrics")
        finally:
            collector.terminate()
            collector.wait(30)

    errors = [s for s in suspects_in(values) if s.event.level == "ERROR"]
    assert {s.event.service for s in errors} == {"payment", "orders"}  # proto and JSON alike
    for s in errors:
        assert s.scope == "shop"  # from the resource attribute the settings name
        assert s.event.trace_id == TRACE  # the collector's trace parser, through OTLP
        assert s.event.ts is not None and T0 <= s.event.ts < T0 + timedelta(seconds=20)
        assert s.event.ts.microsecond == 123000  # the line's own time, not when it was read
        assert "connection refused" in s.event.message and not s.event.message.startswith("2024")
    alert = read_record(Alert, alerts[0])
    assert alert.report.scope == "shop"
    assert {c.service for c in alert.report.root_causes} & {"payment", "orders"}
    assert spans == SPANS and points >= 1
    print(f"\ncollector: {len(errors)} ERROR suspects, {spans:.0f} spans, {points:.0f} points")

    # OTLP/JSON lines (what the collector's file exporter writes, one request a line: here the
    # JSON records of the topic), scanned offline: the same service.
    captured = [v for v in read_all(kafka_bootstrap, env["SLUICE_TOPICS__OTLP_LOGS"], 2.0)
                if v.startswith(b"{")]  # fmt: skip
    assert captured
    (tmp_path / "capture.jsonl").write_bytes(b"\n".join(captured) + b"\n")
    scanned = subprocess.run(
        [sys.executable, "-m", "sluice.stream", "scan", str(tmp_path / "capture.jsonl"), "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert scanned.returncode == 0, scanned.stderr[-2000:]
    assert '"orders"' in scanned.stdout and '"payment"' not in scanned.stdout
