"""The topology: which topics Sluice uses, creating them, and reading them whole.

kafka-python is imported where it is used, so importing this module costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sluice.stream.errors import SluiceKafkaError
from sluice.stream.kafka.clients import (
    client_config,
    unreachable,
)
from sluice.stream.settings import Settings

__all__ = [
    "MAX_RECORD_BYTES",
    "TopicSpec",
    "describe_topics",
    "ensure_topics",
    "read_topic",
    "records_written",
    "state_changelog_topic",
    "topic_partitions",
    "topic_specs",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topology: compaction where the latest record per key is the state.

    The analysis state's changelog is created here too (Faust's name for it, compacted, one
    partition per suspects partition), so the topology has one owner.
    """
    k, t = settings.kafka, settings.topics
    # With three replicas or more, an acknowledged write is on two of them: one broker may die.
    durable = {"min.insync.replicas": "2"} if k.replication_factor >= 3 else {}
    retention = {
        "cleanup.policy": "delete",
        "retention.ms": str(k.retention_hours * 3_600_000),
        **durable,
    }
    compacted = {
        "cleanup.policy": "compact",
        "max.message.bytes": str(16 * 1024 * 1024),
        **durable,
    }
    return [
        TopicSpec(t.events, k.partitions, retention),
        # The OpenTelemetry Collector's Kafka exporter writes here (its default topic names).
        *(TopicSpec(name, k.partitions, retention) for name in t.otlp_signals()),
        TopicSpec(t.suspects, k.partitions, retention),
        TopicSpec(t.alerts, k.partitions, retention),
        TopicSpec(t.deadletter, k.partitions, retention),
        TopicSpec(t.feedback, k.partitions, compacted),
        TopicSpec(t.outcomes, k.partitions, retention),
        # Models are ~1 MB and larger: the topic and its producer allow 16 MiB records.
        TopicSpec(t.models, 1, compacted),
        # Acks and silences: few, small, read whole by every worker and sink.
        TopicSpec(t.controls, 1, compacted),
        TopicSpec(state_changelog_topic(settings), k.partitions, compacted),
    ]


def state_changelog_topic(settings: Settings) -> str:
    """The analysis stage's table changelog, named as Faust names it (app id, table, changelog)."""
    return f"{settings.kafka.group_id}-analysis-state-changelog"


def ensure_topics(settings: Settings) -> list[str]:
    """Create the missing topics of the topology; returns the names created. Idempotent."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    specs = topic_specs(settings)
    try:
        admin = KafkaAdminClient(**client_config(settings.kafka), client_id="sluice-admin")
    except KafkaError as exc:
        raise SluiceKafkaError(unreachable(settings.kafka, exc)) from exc
    created: list[str] = []
    try:
        existing = set(admin.list_topics())
        for spec in specs:
            if spec.name in existing:
                continue
            new = NewTopic(
                spec.name,
                spec.partitions,
                settings.kafka.replication_factor,
                topic_configs=spec.config,
            )
            try:
                admin.create_topics([new])
                created.append(spec.name)
                log.info(
                    "created topic %s (%d partitions, %s)",
                    spec.name,
                    spec.partitions,
                    spec.config["cleanup.policy"],
                )
            except TopicAlreadyExistsError:
                pass  # another worker won the race
            except KafkaError as exc:
                raise SluiceKafkaError(f"creating topic failed: {exc}", topic=spec.name) from exc
    finally:
        admin.close()
    return created


def describe_topics(settings: Settings) -> list[dict[str, Any]]:
    """Partitions and the cleanup policy of each topic of the topology (missing ones flagged)."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(**client_config(settings.kafka), client_id="sluice-admin")
    try:
        names = [s.name for s in topic_specs(settings)]
        existing = set(admin.list_topics())
        present = [n for n in names if n in existing]
        # kafka-python 3.x shapes: describe_topics -> [{"name", "partitions", ...}],
        # describe_configs -> {"topic": {name: {config: {"value": ...}}}}
        meta = {m["name"]: m for m in admin.describe_topics(present)} if present else {}
        configs: dict[str, dict[str, Any]] = {}
        if present:
            resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in present]
            configs = admin.describe_configs(resources).get("topic", {})
        out: list[dict[str, Any]] = []
        for n in names:
            if n not in existing:
                out.append({"topic": n, "exists": False})
                continue
            cfg = configs.get(n, {})
            out.append(
                {
                    "topic": n,
                    "exists": True,
                    "partitions": len(meta[n]["partitions"]),
                    "cleanup.policy": cfg.get("cleanup.policy", {}).get("value"),
                    "retention.ms": cfg.get("retention.ms", {}).get("value"),
                }
            )
        return out
    finally:
        admin.close()


#: Records up to this size are fetched whole (the models topic allows 16 MiB).
MAX_RECORD_BYTES = 16 * 1024 * 1024


def read_topic(settings: Settings, topic: str, *, timeout_s: float = 30.0) -> Iterator[Any]:
    """Every record of `topic` up to its end offsets now, partition by partition, then stop.

    Read outside any consumer group (nothing committed): the CLI tools and the retrainer use it
    to read a whole topic as state. Raises SluiceKafkaError when the topic is missing or Kafka
    does not answer within `timeout_s`.
    """
    import time

    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(
            **client_config(settings.kafka),
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=MAX_RECORD_BYTES,
            fetch_max_bytes=MAX_RECORD_BYTES,
        )
    except KafkaError as exc:
        raise SluiceKafkaError(unreachable(settings.kafka, exc), topic=topic) from exc
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise SluiceKafkaError("no such topic (run `sluice topics create`)", topic=topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        todo = {tp for tp in tps if end[tp] > consumer.position(tp)}
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise SluiceKafkaError(
                    f"reading stopped short of the end after {timeout_s}s", topic=topic
                )
            batch = consumer.poll(timeout_ms=500, max_records=5000)
            if batch:
                deadline = time.monotonic() + timeout_s
            for tp, records in batch.items():
                for r in records:
                    if r.offset < end[tp]:
                        yield r
            for tp in list(todo):
                if consumer.position(tp) >= end[tp]:
                    todo.discard(tp)
    except KafkaError as exc:
        raise SluiceKafkaError(f"reading failed: {exc}", topic=topic) from exc
    finally:
        consumer.close()


def topic_partitions(settings: Settings, topic: str) -> list[int]:
    """The partition ids of `topic`; SluiceKafkaError when it does not exist."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(
            **client_config(settings.kafka), group_id=None, enable_auto_commit=False
        )
        try:
            parts = consumer.partitions_for_topic(topic)
        finally:
            consumer.close()
    except KafkaError as exc:
        raise SluiceKafkaError(f"reading metadata failed: {exc}", topic=topic) from exc
    if not parts:
        raise SluiceKafkaError("no such topic (run `sluice topics create`)", topic=topic)
    return sorted(parts)


def records_written(settings: Settings, topic: str) -> int:
    """Records ever appended to `topic` (the sum of its end offsets): counts new arrivals."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(
            **client_config(settings.kafka), group_id=None, enable_auto_commit=False
        )
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
            return int(sum(ends.values()))
        finally:
            consumer.close()
    except KafkaError as exc:
        raise SluiceKafkaError(f"reading end offsets failed: {exc}", topic=topic) from exc
