"""Following a topic to its end and on: the registry, verdicts and controls each keep one."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sluice.stream.kafka.clients import (
    aiokafka_config,
)
from sluice.stream.kafka.topics import MAX_RECORD_BYTES, topic_partitions
from sluice.stream.settings import Settings

__all__ = ["TopicFollower", "open_assigned"]

log = logging.getLogger(__name__)


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
