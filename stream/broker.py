"""Kafka plumbing shared by the worker and the CLI tools: client configuration and the topology.

kafka-python is imported where it is used, so importing this module costs nothing.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sluice.stream._errors import SluiceError
from sluice.stream._settings import KafkaSettings, Settings

__all__ = [
    "SluiceKafkaError",
    "TopicFollower",
    "TopicSpec",
    "aiokafka_config",
    "client_config",
    "describe_topics",
    "ensure_topics",
    "open_assigned",
    "read_topic",
    "records_written",
    "state_changelog_topic",
    "topic_partitions",
    "topic_specs",
]

log = logging.getLogger(__name__)


class SluiceKafkaError(SluiceError):
    """A Kafka operation Sluice needs failed; carries the topic when one is involved."""

    def __init__(self, message: str, *, topic: str | None = None) -> None:
        super().__init__(f"{message} (topic {topic})" if topic else message)
        self.topic = topic


def client_config(kafka: KafkaSettings) -> dict[str, Any]:
    """kafka-python keyword arguments; the SASL password is unwrapped only here."""
    cfg: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol.startswith("SASL"):
        cfg["sasl_mechanism"] = kafka.sasl_mechanism
        cfg["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            cfg["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    if kafka.security_protocol.endswith("SSL"):
        cfg["ssl_check_hostname"] = kafka.ssl_check_hostname
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if (path := getattr(kafka, name)) is not None:
                cfg[name] = str(path)
    return cfg


def listener(kafka: KafkaSettings) -> str:
    """Which listener the settings talk to, for errors: address, protocol, mechanism and user
    (never the password)."""
    parts: list[str] = [kafka.security_protocol]
    if kafka.security_protocol.startswith("SASL"):
        parts.append(f"{kafka.sasl_mechanism} as user {kafka.sasl_username!r}")
    if kafka.security_protocol.endswith("SSL"):
        parts.append(f"CA {kafka.ssl_cafile or 'system'}")
    return f"{kafka.bootstrap_servers} ({', '.join(parts)})"


def unreachable(kafka: KafkaSettings, exc: BaseException) -> str:
    """The message of a failed first contact: the listener, the error, and what to check."""
    hint = ""
    if kafka.security_protocol != "PLAINTEXT":
        hint = (
            "; check that the listener speaks this protocol, that the CA signed its certificate"
            + (", and the SASL credentials" if kafka.security_protocol.startswith("SASL") else "")
            + " (the client log above names the cause)"
        )
    return f"cannot reach Kafka at {listener(kafka)}: {type(exc).__name__}: {exc}{hint}"


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of aiokafka and Faust clients (None without TLS): the settings' CA, the
    client certificate for mTLS, hostname checking as configured."""
    if not kafka.security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    if kafka.ssl_certfile:
        context.load_cert_chain(
            str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None
        )
    context.check_hostname = kafka.ssl_check_hostname
    return context


def aiokafka_config(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments: kafka-python's names, less the file ones, plus a TLS context."""
    opts = {k: v for k, v in client_config(kafka).items() if not k.startswith("ssl_")}
    context = ssl_context(kafka)
    if context is not None:
        opts["ssl_context"] = context
    return opts


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
        consumer = KafkaConsumer(**client_config(settings.kafka), group_id=None)
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
        consumer = KafkaConsumer(**client_config(settings.kafka), group_id=None)
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
            return int(sum(ends.values()))
        finally:
            consumer.close()
    except KafkaError as exc:
        raise SluiceKafkaError(f"reading end offsets failed: {exc}", topic=topic) from exc


async def open_assigned(
    settings: Settings, topic: str, client_id: str
) -> tuple[Any, dict[Any, int]]:
    """A started aiokafka consumer on every partition of `topic` from the beginning, outside any
    group (each worker reads the whole topic), and the end offsets at start: (consumer, ends)."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    # aiokafka's consumer knows no partitions before it subscribes: ask kafka-python.
    parts = await asyncio.to_thread(topic_partitions, settings, topic)
    consumer = AIOKafkaConsumer(
        **aiokafka_config(settings.kafka),
        group_id=None,
        enable_auto_commit=False,
        client_id=client_id,
        max_partition_fetch_bytes=MAX_RECORD_BYTES,
        fetch_max_bytes=MAX_RECORD_BYTES,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        return consumer, await consumer.end_offsets(tps)
    except BaseException:
        await consumer.stop()
        raise


class TopicFollower:
    """Reads a topic outside any group, from the beginning (or its last `tail` records per
    partition), then follows it until stopped, handing each record to `on_record`.

    `loaded` is set once the records that were there at start have been handed over. A record
    `on_record` rejects (ValueError, pydantic's ValidationError among them) is skipped and
    counted: these are read-only views (controls, outcomes, recent alerts), not a stage that owes
    a dead letter.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        client_id: str,
        on_record: Callable[[bytes], None],
        *,
        tail: int | None = None,
    ) -> None:
        import asyncio

        self._settings = settings
        self.topic = topic
        self._client_id = client_id
        self._on_record = on_record
        self._tail = tail
        self.loaded = asyncio.Event()
        self._stopping = asyncio.Event()
        self.skipped = 0

    async def run(self) -> None:
        consumer, ends = await open_assigned(self._settings, self.topic, self._client_id)
        try:
            if self._tail is not None:
                starts = await consumer.beginning_offsets(list(ends))
                for tp, end in ends.items():
                    consumer.seek(tp, max(starts[tp], end - self._tail))
            while not self._stopping.is_set():
                data = await consumer.getmany(timeout_ms=500, max_records=5000)
                for msgs in data.values():
                    for m in msgs:
                        try:
                            self._on_record(m.value or b"")
                        except ValueError:
                            self.skipped += 1
                            log.warning("%s:%d:%d: not a record of this topic; skipped",
                                        m.topic, m.partition, m.offset)  # fmt: skip
                if not self.loaded.is_set():
                    at = [await consumer.position(tp) >= end for tp, end in ends.items()]
                    if all(at):
                        self.loaded.set()
        finally:
            await consumer.stop()

    def stop(self) -> None:
        self._stopping.set()
