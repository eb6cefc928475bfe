"""The shippers in front of Kafka, one record each in the shape its documentation gives (Fluent
Bit's Kubernetes filter, Vector's `kubernetes_logs`, Filebeat's ECS fields, Docker's json-file,
CRI lines; none can be installed here): each becomes an event with the service, pod, namespace,
time and level the record names, and its line read by the plain-text formats. A value of the
wrong type is never a name."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.stream.ingest.envelopes import Ignored, at_path, unwrap
from sluice.stream.ingest.parsing import parse_batch, parse_event
from sluice.stream.records import Event
from sluice.stream.settings import PipelineSettings, TextSettings

LINE = "2024-06-01 08:00:00,123 ERROR [main] c.e.Payment - payment refused: connection reset"
WHEN = datetime(2024, 6, 1, 8, 0, 0, 123000, tzinfo=UTC)

#: Fluent Bit with the Kubernetes filter (its documented `kubernetes` map).
FLUENT_BIT = {
    "date": 1717228800.123,
    "log": LINE + "\n",
    "stream": "stdout",
    "time": "2024-06-01T08:00:00.123Z",
    "kubernetes": {
        "pod_name": "payment-7d9c8b6f5-x2x4q",
        "namespace_name": "shop",
        "pod_id": "0f7d...",
        "labels": {"app": "payment", "pod-template-hash": "7d9c8b6f5"},
        "host": "node-7",
        "container_name": "payment-app",
        "docker_id": "ab12",
        "container_image": "shop/payment:1.4",
    },
}
#: Vector's kubernetes_logs source.
VECTOR = {
    "file": "/var/log/pods/shop_payment-7d9c8b6f5-x2x4q_0f7d/payment-app/0.log",
    "kubernetes": {
        "container_name": "payment-app",
        "pod_labels": {"app.kubernetes.io/name": "payment", "app": "legacy-name"},
        "pod_name": "payment-7d9c8b6f5-x2x4q",
        "pod_namespace": "shop",
        "pod_node_name": "node-7",
    },
    "message": LINE,
    "source_type": "kubernetes_logs",
    "stream": "stdout",
    "timestamp": "2024-06-01T08:00:00.123456789Z",
}
#: Filebeat's ECS document.
FILEBEAT = {
    "@timestamp": "2024-06-01T08:00:00.123Z",
    "message": LINE,
    "log": {"level": "error", "file": {"path": "/var/log/orders.log"}, "offset": 512},
    "service": {"name": "orders"},
    "host": {"name": "node-7", "hostname": "node-7.local"},
    "kubernetes": {"pod": {"name": "orders-5b6c7d8f9-bcdfg"}, "namespace": "shop",
                   "container": {"name": "orders"}},
    "trace": {"id": "5b8efff798038103d269b633813fc60c"},
    "span": {"id": "eee19b7ec3c1b174"},
    "ecs": {"version": "8.11.0"},
    "agent": {"type": "filebeat", "version": "8.15.0"},
}  # fmt: skip
#: Docker's json-file driver.
DOCKER = {"log": LINE + "\n", "stream": "stderr", "time": "2024-06-01T08:00:00.123456789Z"}
CRI = f"2024-06-01T08:00:00.123456789Z stdout F {LINE}"


def _event(record: Any, key: bytes | None = None) -> Event:
    raw = record.encode() if isinstance(record, str) else json.dumps(record).encode()
    batch = parse_batch([raw], 65536, TextSettings().formats(), stream="shipped")
    assert batch.dead == []
    return Event(**batch.event(0, key, "unknown"))


@pytest.mark.parametrize(
    ("record", "service", "pod", "namespace", "host"),
    [
        (FLUENT_BIT, "payment", "payment-7d9c8b6f5-x2x4q", "shop", "node-7"),
        (VECTOR, "payment", "payment-7d9c8b6f5-x2x4q", "shop", "node-7"),
        (FILEBEAT, "orders", "orders-5b6c7d8f9-bcdfg", "shop", "node-7"),
    ],
    ids=["fluent-bit", "vector", "filebeat"],
)
def test_a_shippers_record_names_service_pod_namespace_host_time_and_level(
    record: dict[str, Any], service: str, pod: str, namespace: str, host: str
) -> None:
    ev = _event(record)
    assert ev.service == service and ev.host == host
    assert ev.attributes["pod"] == pod and ev.attributes["namespace"] == namespace
    assert ev.level == "ERROR"
    assert ev.ts is not None and abs((ev.ts - WHEN).total_seconds()) < 0.001
    assert ev.message.endswith("payment refused: connection reset")
    assert not ev.message.startswith("2024-06-01")  # the line's header was read, not kept
    assert "{" not in ev.service and "kubernetes" not in ev.attributes


def test_filebeat_keeps_trace_and_span_ids() -> None:
    ev = _event(FILEBEAT)
    assert ev.trace_id == "5b8efff798038103d269b633813fc60c" and ev.span_id == "eee19b7ec3c1b174"


@pytest.mark.parametrize("record", [DOCKER, CRI], ids=["docker-json-file", "cri"])
def test_container_runtime_wrappers_give_the_line_its_time_and_level(record: Any) -> None:
    ev = _event(record, key=b"payment")
    assert ev.service == "payment" and ev.level == "ERROR"
    assert ev.ts is not None and abs((ev.ts - WHEN).total_seconds()) < 0.001
    assert ev.message.endswith("payment refused: connection reset")


def test_kubernetes_service_rule_label_then_app_then_container_then_pod() -> None:
    k = dict(FLUENT_BIT["kubernetes"])  # type: ignore[call-overload]
    ignored: Ignored = Ignored()
    with_app = unwrap({**FLUENT_BIT, "kubernetes": k}, ignored)
    assert with_app is not None and with_app["service"] == "payment"
    k["labels"] = {"app.kubernetes.io/name": "pay", "app": "payment"}
    assert (unwrap({**FLUENT_BIT, "kubernetes": k}, ignored) or {})["service"] == "pay"
    k["labels"] = {}
    assert (unwrap({**FLUENT_BIT, "kubernetes": k}, ignored) or {})["service"] == "payment-app"
    del k["container_name"]
    assert (unwrap({**FLUENT_BIT, "kubernetes": k}, ignored) or {})["service"] == "payment"


@pytest.mark.parametrize(
    ("value", "kind"),
    [({"id": "orders"}, "object"), (["orders"], "list"), (42, "number"), (True, "boolean")],
)
def test_no_object_list_or_number_is_ever_a_service_host_or_level(value: Any, kind: str) -> None:
    raw = json.dumps({"message": "ERROR x", "service": value, "host": value, "level": value})
    batch = parse_batch([raw.encode()], 65536)
    ev = Event(**batch.event(0, None, "unknown"))
    assert ev.service == "unknown" and ev.host is None and ev.level == "ERROR"
    assert batch.ignored == {("service", kind): 1, ("host", kind): 1, ("level", kind): 1}
    # the ECS shape is a name, not a value of the wrong type
    ecs = parse_event(json.dumps({"message": "x", "service": {"name": "orders"}}).encode(),
                      None, "unknown", 65536)  # fmt: skip
    assert ecs.service == "orders"


def test_at_path_reads_nested_and_dotted_keys() -> None:
    obj = {"kubernetes": {"labels": {"team": "payments", "app.kubernetes.io/name": "pay"}},
           "log.level": "warn", "a": {"b.c": {"d": 1}}}  # fmt: skip
    assert at_path(obj, "kubernetes.labels.team") == "payments"
    assert at_path(obj, "kubernetes.labels.app.kubernetes.io/name") == "pay"
    assert at_path(obj, "log.level") == "warn"
    assert at_path(obj, "a.b.c.d") == 1
    assert at_path(obj, "kubernetes.nope") is None


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["log", "message", "stream", "time", "@timestamp", "kubernetes", "service",
                         "host", "ecs", "level", "date", "timestamp"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: st.dictionaries(
                st.sampled_from(["pod_name", "namespace_name", "labels", "app", "name",
                                 "container_name", "pod_labels", "host", "level"]), inner,
                max_size=4) | st.lists(inner, max_size=2),
            max_leaves=12,
        ),
        max_size=6,
    )
)  # fmt: skip
def test_any_envelope_shape_is_an_event_or_a_dead_letter_and_names_are_strings(
    obj: dict[str, Any],
) -> None:
    batch = parse_batch([json.dumps(obj).encode()], 65536, TextSettings().formats(), stream="s")
    if batch.dead:
        return
    ev = Event(**batch.event(0, None, "unknown"))
    assert isinstance(ev.service, str) and "{" not in ev.service and "[" not in ev.service
    assert ev.host is None or ("{" not in ev.host and "[" not in ev.host)


def test_dotted_paths_in_the_settings_name_anything_else() -> None:
    labels = {"team": "payments", "app": "payment"}
    record = {**FLUENT_BIT, "kubernetes": {**FLUENT_BIT["kubernetes"], "labels": labels}}  # type: ignore[dict-item]
    raw = json.dumps(record).encode()
    paths = {"service": "kubernetes.labels.team", "scope": "kubernetes.namespace_name"}
    batch = parse_batch([raw], 65536, TextSettings().formats(), stream="s", field_paths=paths)
    ev = Event(**batch.event(0, None, "unknown"))
    assert ev.service == "payments" and ev.attributes["scope"] == "shop"
    plain = parse_batch([b'{"message": "x", "meta": {"svc": "cart"}}'], 65536,
                        field_paths={"service": "meta.svc"})  # fmt: skip
    assert Event(**plain.event(0, None, "unknown")).service == "cart"
    with pytest.raises(ValueError, match="not one of"):
        PipelineSettings(field_paths={"team": "kubernetes.labels.team"})
