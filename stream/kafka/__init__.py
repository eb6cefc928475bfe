"""Kafka: client configuration (`clients`), the topology and reading topics whole
(`topics`), and followers that keep reading a topic to its end and on (`followers`).

Importing the package loads none of its modules (`stream._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.stream._lazy import lazy_names

if TYPE_CHECKING:
    from sluice.stream.errors import SluiceKafkaError
    from sluice.stream.kafka.clients import aiokafka_config, client_config
    from sluice.stream.kafka.followers import TopicFollower, open_assigned
    from sluice.stream.kafka.topics import (
        MAX_RECORD_BYTES,
        TopicSpec,
        describe_topics,
        ensure_topics,
        read_topic,
        records_written,
        state_changelog_topic,
        topic_partitions,
        topic_specs,
    )

__all__ = [
    "MAX_RECORD_BYTES",
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

__getattr__, __dir__ = lazy_names(
    globals(),
    {
        "sluice.stream.kafka.clients": ["SluiceKafkaError", "aiokafka_config", "client_config"],
        "sluice.stream.kafka.topics": [
            "MAX_RECORD_BYTES",
            "TopicSpec",
            "describe_topics",
            "ensure_topics",
            "read_topic",
            "records_written",
            "state_changelog_topic",
            "topic_partitions",
            "topic_specs",
        ],
        "sluice.stream.kafka.followers": ["TopicFollower", "open_assigned"],
    },
)
