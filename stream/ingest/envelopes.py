"""The JSON envelopes log shippers wrap a line in, read without configuration: Elastic's ECS
(Filebeat, Elastic Agent, Logstash), Fluent Bit with its Kubernetes filter, Vector's
`kubernetes_logs` source and Docker's json-file driver; and CRI's text lines
(`<time> stdout F <line>`). Each becomes an event object with the keys the JSON event rules read
(`ts`, `service`, `host`, `level`, `message`, `trace_id`, `span_id`) plus `pod`, `namespace`,
`container`; its line is a raw line (`LINE_KEY`) that the plain-text formats read next.

The shapes are the ones each project documents (Fluent Bit's Kubernetes filter and Vector's
`kubernetes_logs` fields, ECS's field reference, Docker's json-file format); none of the shippers
can be installed here, so the fixtures in tests/ingest/test_envelopes.py follow those documents.

Kubernetes names the service: label `app.kubernetes.io/name`, else `app`, else the container's
name, else the pod's less its ReplicaSet hashes. A name is a non-blank string: an object, list or
number where a service, host or level belongs is ignored and counted (`Ignored`), never printed
as a name. `EventKeys` (settings: dotted paths such as `kubernetes.labels.team`) overrides.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from sluice.stream.ingest.otlp import LINE_KEY, POD_HASH

__all__ = [
    "CRI_LINE",
    "Ignored",
    "at_path",
    "name_or_count",
    "unwrap",
    "unwrap_cri",
    "with_paths",
]

#: Fields ignored for their type, by (field, type): `service/object`, `level/number`, ...
Ignored = Counter[tuple[str, str]]

#: `2024-06-01T08:00:00.123456789Z stdout F the line` (the kubelet's CRI log format).
CRI_LINE = re.compile(r"(\d{4}-\d{2}-\d{2}T\S+) (stdout|stderr) ([FP]) (.*)", re.DOTALL)
_NAME_FIELDS = ("service", "host", "level")


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "list"
    return type(v).__name__


def name_or_count(value: Any, field: str, ignored: Ignored) -> str | None:
    """`value` if it is a usable name (a non-blank string, at most 200 characters kept); else
    None, and a value of another type is counted in `ignored` under (field, its type)."""
    if isinstance(value, str):
        return value.strip()[:200] or None
    if value is not None:
        ignored[(field, _type_name(value))] += 1
    return None


def at_path(obj: Any, path: str) -> Any:
    """The value at a dotted path (`kubernetes.labels.team`), nested or with dots in the key
    (`log.level` as one key, as Logstash writes it)."""
    if isinstance(obj, dict) and path in obj:
        return obj[path]
    head, dot, rest = path.partition(".")
    while dot:
        if isinstance(obj, dict) and head in obj:
            found = at_path(obj[head], rest)
            if found is not None:
                return found
        more, dot, rest = rest.partition(".")
        head = f"{head}.{more}"
    return None


def with_paths(
    obj: dict[str, Any], record: dict[str, Any], paths: Mapping[str, str] | None
) -> dict[str, Any]:
    """`obj` with the fields the settings' dotted paths find in `record` (they come first)."""
    if not paths:
        return obj
    found = {f: v for f, p in paths.items() if (v := at_path(record, p)) is not None}
    return {**obj, **found} if found else obj


def _service_of_pod(labels: Any, container: str | None, pod: str | None) -> str | None:
    if isinstance(labels, dict):
        for key in ("app.kubernetes.io/name", "app"):
            if isinstance(labels.get(key), str) and labels[key].strip():
                return str(labels[key]).strip()[:200]
    if container:
        return container
    return (POD_HASH.sub("", pod) or pod) if pod else None


def _event(
    message: Any,
    ts: Any,
    service: Any,
    host: Any,
    level: Any,
    trace: Any,
    span: Any,
    k8s: dict[str, Any],
    ignored: Ignored,
) -> dict[str, Any] | None:
    if not isinstance(message, str):
        return None  # not this envelope after all: the JSON event rules decide
    out: dict[str, Any] = {"message": message.rstrip("\n"), LINE_KEY: True}
    for key, value in (("service", service), ("host", host), ("level", level)):
        name = name_or_count(value, key, ignored)
        if name is not None:
            out[key] = name
    if ts is not None:
        out["ts"] = ts
    for key, value in (("trace_id", trace), ("span_id", span)):
        if isinstance(value, str) and value:
            out[key] = value
    out.update({k: v for k, v in k8s.items() if v})
    return out


def _fluent_bit_or_vector(obj: dict[str, Any], ignored: Ignored) -> dict[str, Any] | None:
    k = obj["kubernetes"]
    pod = name_or_count(k.get("pod_name"), "pod", ignored)
    container = name_or_count(k.get("container_name"), "container", ignored)
    vector = "pod_namespace" in k or "pod_labels" in k or "pod_node_name" in k
    labels = k.get("pod_labels") if vector else k.get("labels")
    meta = {
        "pod": pod,
        "namespace": name_or_count(k.get("pod_namespace" if vector else "namespace_name"),
                                   "namespace", ignored),
        "container": container,
    }  # fmt: skip
    host = k.get("pod_node_name") if vector else k.get("host")
    message = obj.get("message") if vector else obj.get("log", obj.get("message"))
    ts = obj.get("timestamp") if vector else obj.get("time", obj.get("date"))
    service = _service_of_pod(labels, container, pod)
    return _event(message, ts, service, host, obj.get("level"), obj.get("trace_id"),
                  obj.get("span_id"), meta, ignored)  # fmt: skip


def _ecs(obj: dict[str, Any], ignored: Ignored) -> dict[str, Any] | None:
    pod = at_path(obj, "kubernetes.pod.name")
    container = at_path(obj, "kubernetes.container.name") or at_path(obj, "container.name")
    labels = at_path(obj, "kubernetes.labels")
    service = at_path(obj, "service.name")
    if service is None:
        service = _service_of_pod(
            labels, container if isinstance(container, str) else None,
            pod if isinstance(pod, str) else None,
        )  # fmt: skip
    meta = {
        "pod": name_or_count(pod, "pod", ignored),
        "namespace": name_or_count(
            at_path(obj, "kubernetes.namespace.name") or at_path(obj, "kubernetes.namespace"),
            "namespace", ignored),
        "container": name_or_count(container, "container", ignored),
    }  # fmt: skip
    host = at_path(obj, "host.name") or at_path(obj, "host.hostname")
    if host is None and isinstance(obj.get("host"), str):
        host = obj["host"]
    return _event(obj.get("message"), obj.get("@timestamp"), service, host,
                  at_path(obj, "log.level"), at_path(obj, "trace.id"), at_path(obj, "span.id"),
                  meta, ignored)  # fmt: skip


def _is_ecs(obj: dict[str, Any]) -> bool:
    if "@timestamp" not in obj:
        return False
    return (
        "ecs" in obj
        or "log.level" in obj
        or "service.name" in obj
        or any(isinstance(obj.get(k), dict) for k in ("log", "service", "host", "kubernetes"))
    )


def unwrap(obj: dict[str, Any], ignored: Ignored) -> dict[str, Any] | None:
    """The event object inside a shipper's envelope, or None when `obj` is none of them (a plain
    JSON event: its own rules apply)."""
    k = obj.get("kubernetes")
    if _is_ecs(obj):
        return _ecs(obj, ignored)
    if isinstance(k, dict) and ("pod_name" in k or "container_name" in k):
        return _fluent_bit_or_vector(obj, ignored)
    if isinstance(obj.get("log"), str) and isinstance(obj.get("stream"), str) and "time" in obj:
        return _event(obj["log"], obj["time"], None, None, None, None, None, {}, ignored)
    return None


def unwrap_cri(line: str) -> tuple[str, str, str] | None:
    """(time, stream, line) of a CRI log line, or None."""
    m = CRI_LINE.fullmatch(line)
    return (m.group(1), m.group(2), m.group(4)) if m else None
