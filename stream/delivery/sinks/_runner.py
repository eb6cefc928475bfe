"""`sluice sink run NAME`: the alerts topic, in the sink's own consumer group, to one sink.

Each sink is its own consumer group (`<group>-sink-<name>`), so a slow or failing receiver
holds back only its own deliveries, never the pipeline or the other sinks. A record's offset is
committed only after the alert was delivered, or after its dead letter (with the sink and the
reason) was acknowledged: after a crash the sink delivers again what it had not committed.

Silences (`sluice silence`) are honoured here too, from the sink's own read of the controls
topic: a firing revision under a silence is committed without a notification. Resolutions are
always delivered: one may close what was opened before the silence began.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sluice.models.analyst import backoff_delay
from sluice.stream.delivery.controls import Controls, ControlsWatcher
from sluice.stream.delivery.sinks._protocol import Sink
from sluice.stream.errors import RecordError, SinkError
from sluice.stream.kafka.clients import aiokafka_config, unreachable
from sluice.stream.records import Alert, DeadLetter, read_record
from sluice.stream.settings import Settings

__all__ = ["SinkRunner", "sink_group"]

log = logging.getLogger(__name__)


def sink_group(settings: Settings, name: str) -> str:
    """The sink's consumer group: its own offsets on the alerts topic."""
    return f"{settings.kafka.group_id}-sink-{name}"


class SinkRunner:
    """Delivers every alert record to `sink`, retrying with jittered backoff, until stopped."""

    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self.sink = sink
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._wall = wall
        self._stopping = asyncio.Event()
        self.controls = Controls()
        self.delivered = 0
        self.retries = 0
        self.dead = 0
        self.silenced = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Read the controls topic to its end, then deliver while following both."""
        watcher = ControlsWatcher(self._settings, self.controls)
        watching = asyncio.ensure_future(watcher.run())
        try:
            loaded = asyncio.ensure_future(watcher.loaded.wait())
            await asyncio.wait({watching, loaded}, return_when=asyncio.FIRST_COMPLETED)
            loaded.cancel()
            if watching.done():
                watching.result()  # the controls topic could not be read: raise why
                return  # stopped before it was read
            await self._deliver()
        finally:
            watcher.stop()
            await asyncio.wait({watching}, timeout=10)

    async def _deliver(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka.errors import KafkaError

        s = self._settings
        opts = aiokafka_config(s.kafka)
        consumer = AIOKafkaConsumer(
            s.topics.alerts,
            **opts,
            group_id=sink_group(s, self.sink.name),
            client_id=f"sluice-sink-{self.sink.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        producer = AIOKafkaProducer(**opts, acks="all", client_id=f"sluice-sink-{self.sink.name}")
        try:
            await producer.start()
            await consumer.start()
        except KafkaError as exc:
            await consumer.stop()
            await producer.stop()
            raise SinkError(self.sink.name, unreachable(s.kafka, exc), retryable=False) from exc
        log.info("sink %s: delivering %s", self.sink.name, s.topics.alerts)
        try:
            while not self._stopping.is_set():
                data = await consumer.getmany(timeout_ms=500, max_records=100)
                for tp, messages in data.items():
                    for m in messages:
                        await self.handle(m, producer)
                        await consumer.commit({tp: m.offset + 1})
        finally:
            await consumer.stop()
            await producer.stop()

    async def handle(self, m: Any, producer: Any) -> None:
        """Deliver one record of the alerts topic, or write its dead letter; never raises a
        delivery error (Kafka errors propagate: the record stays uncommitted)."""
        name = self.sink.name
        where = f"{m.topic}:{m.partition}:{m.offset}"
        value = m.value or b""
        try:
            alert = read_record(Alert, value)
        except RecordError as exc:  # a newer major version too: the sink cannot know its fields
            await self._dead(producer, m, f"sink {name}: {exc}")
            return
        silence = self.controls.silence(alert, self._wall()) if alert.status == "firing" else None
        until = silence.until if silence else alert.silenced_until
        if alert.status == "firing" and until is not None and until > self._wall():
            self.silenced += 1
            log.info("sink %s: %s rev %d not sent: silenced until %s", name, alert.fingerprint,
                     alert.revision, until.isoformat())  # fmt: skip
            return
        attempts = self._settings.sinks.max_attempts
        cfg = self._settings.sinks
        last = ""
        for attempt in range(attempts):
            try:
                await self.sink.deliver(alert)
            except SinkError as exc:
                last = str(exc)
                if not exc.retryable or attempt + 1 == attempts:
                    break
                delay = backoff_delay(
                    attempt, cfg.backoff_base_s, cfg.backoff_max_s, exc.retry_after, self._rng
                )
                self.retries += 1
                log.warning("%s (%s, alert %s rev %d); retry %d in %.1f s", exc, where,
                            alert.fingerprint, alert.revision, attempt + 1, delay)  # fmt: skip
                await self._sleep(delay)
            else:
                self.delivered += 1
                log.info("sink %s: delivered %s rev %d (%s)", name, alert.fingerprint,
                         alert.revision, alert.status)  # fmt: skip
                return
        await self._dead(producer, m, f"sink {name} failed after {attempt + 1} attempts: {last}")

    async def _dead(self, producer: Any, m: Any, reason: str) -> None:
        self.dead += 1
        log.error("dead letter %s:%s:%s: %s", m.topic, m.partition, m.offset, reason)
        letter = DeadLetter.of(m.value or b"", m.topic, m.partition, m.offset, reason[:500])
        await (await producer.send(self._settings.topics.deadletter, value=letter.to_bytes()))
