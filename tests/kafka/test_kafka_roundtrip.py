"""The local broker is real: kafka-python produce/consume, and topic creation from settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.partitioner.default import murmur2

from sluice.models.filter import KeywordFilter
from sluice.stream import Settings, TopicNames, ensure_topics
from sluice.stream.filtering.stage import FilterStage
from sluice.stream.kafka.topics import describe_topics, state_changelog_topic

pytestmark = pytest.mark.integration


def test_produce_consume_round_trip(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("roundtrip")
    sent = [(f"k{i}".encode(), f"value-{i}".encode()) for i in range(20)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for key, value in sent:
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=10)
    producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=f"g-{topic}",
        consumer_timeout_ms=15000,
    )
    got = []
    for msg in consumer:
        got.append((msg.key, msg.value))
        if len(got) == len(sent):
            break
    consumer.close()
    assert got == sent


def test_ensure_topics_creates_topology_once(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    prefix = unique_name("topo")
    s = Settings.model_validate(
        {
            "kafka": {"bootstrap_servers": kafka_bootstrap, "partitions": 3, "group_id": prefix},
            # every topic of the topology, so a topic added later is this test's own too
            "topics": {n: f"{prefix}-{n}" for n in TopicNames.model_fields},
        }
    )
    created = ensure_topics(s)
    assert len(created) == len(TopicNames.model_fields) + 1  # and the analysis state's changelog
    assert all(t.startswith(prefix) for t in created)
    assert ensure_topics(s) == []  # idempotent
    rows = {r["topic"]: r for r in describe_topics(s)}
    assert rows[s.topics.events]["partitions"] == 3
    assert rows[s.topics.models]["partitions"] == 1
    assert rows[s.topics.feedback]["cleanup.policy"] == "compact"
    assert rows[s.topics.models]["cleanup.policy"] == "compact"
    assert rows[s.topics.events]["cleanup.policy"] == "delete"
    assert rows[s.topics.outcomes]["cleanup.policy"] == "delete"  # counts, never compacted
    changelog = rows[state_changelog_topic(s)]  # one partition per suspects partition
    assert (changelog["partitions"], changelog["cleanup.policy"]) == (3, "compact")


def test_the_filter_stage_puts_a_key_where_java_and_aiokafka_put_it(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    """A scope's suspects must land on one partition whichever release produced them: the
    release before produced with aiokafka (murmur2 of the key, Java's), this one's filter stage
    with librdkafka, whose default partitioner (CRC32) puts most keys elsewhere."""
    topic = topic_factory("partitioner", partitions=6)
    settings = Settings.model_validate({"kafka": {"bootstrap_servers": kafka_bootstrap}})
    consumer, producer = FilterStage(settings, KeywordFilter(["ERROR"]))._make_clients()
    got: dict[bytes, int] = {}

    def delivered(err: object, msg: Any) -> None:
        assert err is None, err
        got[msg.key()] = msg.partition()

    keys = [f"scope-{i}".encode() for i in range(60)]
    for key in keys:
        producer.produce(topic, b"{}", key, on_delivery=delivered)
    assert producer.flush(30) == 0
    consumer.close()
    assert got == {k: (murmur2(k) & 0x7FFFFFFF) % 6 for k in keys}
