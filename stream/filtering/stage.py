"""The filter stage in the worker: events -> suspects (flagged events, new templates' first
sightings, and an audit sample) and dead letters, each batch screened by `filtering.screen`.

`FilterStage` is the worker's loop, straight on librdkafka (confluent-kafka): its batch
`consume()` reads and decodes records in C threads, where aiokafka's per-record Python objects
were a quarter of a worker's time, and Faust's per-message path costs ~100x what this stage can
afford (docs/architecture.md). Per fetched batch and partition: screen, produce, wait for the
broker's acknowledgements, then commit. An offset is never committed before everything derived
from the records below it is acknowledged (at-least-once, no gaps). A rebalance first settles
the batches in flight, so revoked partitions are committed before they move.

Every librdkafka call is made on the event loop's thread and never waits there, except in a
rebalance (which waits for the acknowledgements of at most `MAX_IN_FLIGHT` batches), at stop,
and while librdkafka's produce queue is full; the first contact alone runs in a thread. Its
callbacks (deliveries, commits, rebalances, errors) run inside `consume()` and `poll()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sluice.models.filter import Filter, FilterModel, OnnxFilter
from sluice.stream.errors import FilterStageError
from sluice.stream.filtering.counters import StageCounters
from sluice.stream.filtering.verdicts import FirstSight, VerdictCache
from sluice.stream.kafka.clients import librdkafka_config, unreachable
from sluice.stream.records import DeadLetter
from sluice.stream.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

    from sluice.stream.signals.counter import SignalCounter
    from sluice.stream.signals.spans import TelemetryFolder

from sluice.stream.filtering.screen import Screened, screen_batch

__all__ = [
    "FilterStage",
    "FilterStageError",
]

log = logging.getLogger(__name__)


Partition = tuple[str, int]


@dataclass
class _Batch:
    """One fetched batch in flight: the offsets it commits, its deliveries not yet answered."""

    commits: dict[Partition, int] = field(default_factory=dict)
    waiting: int = 0
    error: str | None = None

    def delivered(self, err: KafkaError | None, _msg: Message) -> None:
        """librdkafka's delivery report (inside `poll()`, on the loop's thread)."""
        self.waiting -= 1
        if err is not None and self.error is None:
            self.error = err.str()


class FilterStage:
    """The worker's events -> suspects loop on librdkafka; `run()` until `stop()`.

    Batches are pipelined: while the broker acknowledges what batch N produced, batch N+1 is
    fetched and screened. Commits stay in order: batch N+1 is committed after batch N, and a
    batch whose delivery failed fails every batch after it, whose partitions are then read
    again from their last commit (duplicates downstream, never a gap).
    """

    #: Batches produced but not yet committed; more waits for the oldest. Measured on HDFS lines,
    #: one core, stage alone: 2000/batch with 2 in flight 115k/s; 10000 with 4 in flight 200-250k/s.
    MAX_IN_FLIGHT = 4
    #: Bytes fetched per partition and request.
    FETCH_BYTES = 4 << 20
    #: Seconds a rebalance or a stop waits for the batches in flight to be acknowledged; what is
    #: not acknowledged by then is not committed (read again: duplicates, never a gap).
    SETTLE_S = 10.0
    #: Seconds between reads that found nothing (librdkafka fetches in its threads meanwhile).
    IDLE_S = 0.01

    def __init__(
        self, settings: Settings, filt: Filter, models_ready: asyncio.Event | None = None
    ) -> None:
        self._settings = settings
        self._filter = filt
        self._models_ready = models_ready
        self._next_model: FilterModel | None = None
        self._stopping = asyncio.Event()
        self.counters = StageCounters(model_version=filt.version)
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._batches: deque[_Batch] = deque()  # produced, not yet committed; oldest first
        self._read_again: set[Partition] = set()  # a delivery failed: from the last commit
        self._fatal: str | None = None  # librdkafka cannot go on (a fenced producer)
        self._last_error = ""  # librdkafka's last error, for a failed first contact
        self._committed: dict[Partition, int] = {}  # assigned partition -> next offset to read
        self._tps: dict[Partition, TopicPartition] = {}  # for watermark look-ups
        self._progress_at = time.monotonic()  # last commit, or last look that found no lag
        self.joined = False  # the group gave this stage its partitions (maybe none)
        self.model_loaded = False  # the active model from `models` is in use (or none came)
        self._signal_counter: SignalCounter | None = None  # follows traces across batches
        fs = settings.pipeline.first_sight
        #: per-template verdicts from `feedback` (filled by the worker's verdict follower)
        self.verdicts: VerdictCache | None = VerdictCache(fs.max_verdicts) if fs.verdicts else None
        self.first_sight: FirstSight | None = FirstSight(fs) if fs.enabled else None
        self.text = settings.pipeline.text.formats()  # per key or topic, for the stage's life
        #: set by the worker's verdict follower once `feedback` has been read to its end
        self.verdicts_ready: asyncio.Event | None = None
        sig = settings.pipeline.signals
        if sig.enabled:
            from sluice.stream.signals.counter import SignalCounter

            self._signal_counter = SignalCounter(sig.bucket_s, sig.trace_ttl_s)
        #: spans and metric points: children wait for their parents across batches
        self._telemetry: TelemetryFolder | None = None
        if sig.telemetry:
            from sluice.stream.signals.spans import TelemetryFolder

            self._telemetry = TelemetryFolder(sig.bucket_s, max_keys=sig.max_keys)

    def _make_clients(self) -> tuple[Consumer, Producer]:
        from confluent_kafka import Consumer, Producer

        k = self._settings.kafka
        common = {**librdkafka_config(k), "error_cb": self._on_error}
        consumer = Consumer(
            {
                **common,
                "group.id": k.group_id,
                **({"group.instance.id": f"{k.instance_id}-filter"} if k.instance_id else {}),
                "client.id": f"sluice-filter-{k.instance_id or 'worker'}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": int(k.session_timeout_s * 1000),
                "heartbeat.interval.ms": int(k.session_timeout_s * 1000 / 4),
                "max.poll.interval.ms": 300_000,
                # aiokafka's and Java's assignor, by name and protocol: in a rolling upgrade the
                # workers of the release before (on aiokafka) and of this one share one group
                "partition.assignment.strategy": "roundrobin",
                "max.partition.fetch.bytes": self.FETCH_BYTES,
                "on_commit": self._on_commit,
            }
        )
        producer = Producer(
            {
                **common,
                # Java's and aiokafka's partitioner (murmur2 of the key): a scope's suspects go to
                # one partition whichever release produced them (librdkafka's default is CRC32)
                "partitioner": "murmur2_random",
                "acks": "all",
                "enable.idempotence": True,  # a retry after a leader change writes no duplicate
                "linger.ms": 5,
                "batch.size": 1 << 20,
                "message.max.bytes": 1 << 20,  # aiokafka's bound, and the broker's default
                "client.id": "sluice-filter",
            }
        )
        return consumer, producer

    async def run(self) -> None:
        """Consume, screen, produce, commit, until stopped; raises FilterStageError if it can't."""
        consumer, producer = self._make_clients()
        self._consumer, self._producer = consumer, producer
        try:
            await self._reach(consumer)
            if self._models_ready is not None:  # the first batch is scored by the active model
                try:
                    await asyncio.wait_for(self._models_ready.wait(), timeout=60)
                except TimeoutError:
                    log.warning("filter stage: the models topic did not answer in 60 s; starting "
                                "with %s", self._filter.version)  # fmt: skip
            if self.verdicts_ready is not None:  # the verdicts given so far decide from the start
                try:
                    await asyncio.wait_for(self.verdicts_ready.wait(), timeout=60)
                except TimeoutError:
                    log.warning("filter stage: feedback not read in 60 s; starting with %d "
                                "verdicts", len(self.verdicts or ()))  # fmt: skip
            self.model_loaded = True
            t = self._settings.topics  # events, and the OpenTelemetry Collector's topics
            consumer.subscribe([t.events, *t.otlp_signals()], on_assign=self._on_assign,
                               on_revoke=self._on_revoke, on_lost=self._on_lost)  # fmt: skip
            size = self._settings.pipeline.batch_size
            while not self._stopping.is_set():
                msgs = consumer.consume(size, 0)  # what librdkafka has fetched; never waits
                self._swap_if_offered()  # between batches, also while no events arrive
                if msgs:
                    await self._screen_and_send(msgs)
                producer.poll(0)  # delivery reports
                self._commit_acknowledged()
                if self._read_again:
                    await self._rewind()
                if self._fatal is not None:
                    raise FilterStageError(f"filter stage: Kafka: {self._fatal}")
                if not any(self.lag().values()):
                    self._progress_at = time.monotonic()  # caught up: nothing to make progress on
                await asyncio.sleep(0 if msgs else self.IDLE_S)
            self._settle(self.SETTLE_S)
        finally:
            self._close()

    async def _reach(self, consumer: Consumer) -> None:
        """The first contact, within the connect timeout: an unreachable listener, a wrong CA or
        wrong credentials stop the stage at once, named (librdkafka would retry for ever)."""
        from confluent_kafka import KafkaException

        timeout = self._settings.kafka.connect_timeout_s
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: consumer.list_topics(timeout=timeout)
            )
        except KafkaException as exc:
            consumer.poll(0)  # the error callbacks, which say why (a refused login)
            why = exc.args[0].str() if exc.args else str(exc)
            if self._last_error and self._last_error not in why:
                why = f"{why}; {self._last_error}"
            raise FilterStageError(
                unreachable(self._settings.kafka, ConnectionError(why))
            ) from None

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's client-wide errors: it retries by itself; a fatal one stops the stage."""
        self._last_error = err.str()
        if err.fatal():
            self._fatal = err.str()
        log.warning("filter stage: Kafka: %s", err.str())

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        log.info("filter stage: partitions assigned: %s", _names(assigned))
        self._track(consumer, assigned)
        self._read_again.clear()  # an assignment starts from the committed offsets anyway

    def _on_revoke(self, _consumer: Consumer, revoked: list[TopicPartition]) -> None:
        self._settle(self.SETTLE_S)  # what was produced is acknowledged and committed first
        for tp in revoked:
            self._committed.pop((tp.topic, tp.partition), None)
        log.info("filter stage: partitions revoked: %s", _names(revoked))

    def _on_lost(self, _consumer: Consumer, lost: list[TopicPartition]) -> None:
        """Partitions taken away without a revocation (this member's session expired): their
        offsets belong to another member now, so nothing in flight is committed."""
        self._batches.clear()
        for tp in lost:
            self._committed.pop((tp.topic, tp.partition), None)
        log.warning("filter stage: partitions lost: %s; what was in flight will be read again "
                    "by their new owner", _names(lost))  # fmt: skip

    def _on_commit(self, err: KafkaError | None, _offsets: list[TopicPartition]) -> None:
        if err is not None:  # the next commit covers these offsets; a restart reads them again
            log.warning("filter stage: a commit failed: %s", err.str())

    def _track(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        """Start the lag bookkeeping of newly assigned partitions from their committed offsets
        (the earliest offset where none is committed)."""
        from confluent_kafka import KafkaException

        self._committed, self._tps = {}, {}
        try:
            committed = consumer.committed(assigned, timeout=10) if assigned else []
        except KafkaException as exc:
            log.warning("filter stage: committed offsets unknown (%s); lag counts from 0", exc)
            committed = assigned
        for tp in committed:
            key = (tp.topic, tp.partition)
            self._tps[key] = tp
            offset = tp.offset
            if offset < 0:
                try:
                    offset = consumer.get_watermark_offsets(tp, timeout=5)[0]
                except KafkaException:
                    offset = 0
            self._committed[key] = offset
        self._progress_at = time.monotonic()  # a new assignment starts its own clock
        self.joined = True

    def lag(self) -> dict[tuple[str, int], int]:
        """Records not yet committed per assigned (topic, partition), as of the last fetch."""
        consumer = self._consumer
        if consumer is None:
            return {}
        out: dict[tuple[str, int], int] = {}
        for key, committed in list(self._committed.items()):
            tp = self._tps.get(key)
            if tp is None:
                continue
            try:
                high = consumer.get_watermark_offsets(tp, cached=True)[1]
            except Exception:  # not fetched yet, or the consumer is closing
                continue
            if high is not None and high >= 0:
                out[key] = max(0, high - committed)
        return out

    def stalled_s(self) -> float:
        """Seconds this stage has had lag without committing anything (0 when it has none)."""
        if not any(self.lag().values()):
            return 0.0
        return time.monotonic() - self._progress_at

    def offer_model(self, model: FilterModel) -> None:
        """Use `model` from the next batch on (called by the model watcher, any time)."""
        self._next_model = model

    def _swap_if_offered(self) -> None:
        """Between batches only: a batch is scored by one model, and no offset is skipped."""
        model, self._next_model = self._next_model, None
        if model is None or model.version == self._filter.version:
            return
        if not isinstance(self._filter, OnnxFilter):
            log.warning("filter stage: %s cannot swap models; keeping it", self._filter.version)
            return
        self._filter.swap(model)
        self.counters.model_version = model.version
        self.counters.model_swaps += 1

    async def _screen_and_send(self, msgs: list[Message]) -> None:
        by_partition: dict[Partition, list[Message]] = {}
        for m in msgs:
            err = m.error()
            if err is not None:  # a topic not there yet, a partition's fetch error: it retries
                log.warning("filter stage: Kafka: %s", err.str())
                continue
            by_partition.setdefault((m.topic(), m.partition()), []).append(m)  # type: ignore[arg-type]
        batch = _Batch()
        for (topic, partition), part in by_partition.items():
            self._screen_partition(topic, partition, part, batch)
        self.counters.batches += 1
        self._batches.append(batch)
        while len(self._batches) > self.MAX_IN_FLIGHT:  # wait for the oldest
            self._producer.poll(0)  # type: ignore[union-attr]
            self._commit_acknowledged()
            if len(self._batches) > self.MAX_IN_FLIGHT:
                await asyncio.sleep(0.002)

    def _screen_partition(
        self, topic: str, partition: int, msgs: list[Message], batch: _Batch
    ) -> None:
        t = self._settings.topics
        cfg = self._settings.pipeline
        values = [m.value() or b"" for m in msgs]
        keys = [m.key() for m in msgs]
        now = time.time()
        times = [ts / 1000.0 if ts > 0 else now  # a text line without a time takes it
                 for _kind, ts in (m.timestamp() for m in msgs)]  # fmt: skip

        def source(i: int) -> tuple[str, int | None, int | None]:
            return topic, partition, msgs[i].offset()

        started = time.perf_counter()
        try:
            screened = screen_batch(
                values, keys, source, self._filter, cfg, times, self._signal_counter,
                self.verdicts, self.first_sight, self.text, t.otlp_signals().get(topic),
                self._telemetry,
            )  # fmt: skip
        except Exception as exc:  # the filter itself failed: every record is a dead letter
            log.exception("filter stage: screening %d records of %s:%d failed", len(msgs),
                          topic, partition)  # fmt: skip
            reason = f"filter failed: {type(exc).__name__}: {exc}"[:500]
            screened = Screened(dead=[DeadLetter.of(v, *source(i), reason)
                                      for i, v in enumerate(values)])  # fmt: skip
        seconds = time.perf_counter() - started
        for scope, counts in screened.counts:  # before the suspects they explain
            self._send(batch, t.suspects, counts, scope.encode())
        for scope, messages in screened.messages.items():
            key = scope.encode()
            for value in messages:
                self._send(batch, t.suspects, value, key)
        for d in screened.dead:
            log.warning("dead letter %s:%s:%s: %s", d.topic, d.partition, d.offset, d.reason)
            self._send(batch, t.deadletter, d.to_bytes(), None)
        batch.commits[(topic, partition)] = msgs[-1].offset() + 1  # type: ignore[operator]
        self.counters.add(screened, len(msgs), seconds)
        self.counters.note(self.verdicts, self.first_sight)

    def _send(self, batch: _Batch, topic: str, value: bytes, key: bytes | None) -> None:
        from confluent_kafka import KafkaException

        producer = self._producer
        assert producer is not None
        batch.waiting += 1
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=batch.delivered)
                return
            except BufferError:  # librdkafka's queue is full: let it deliver some first
                producer.poll(0.05)
            except KafkaException as exc:  # refused before it left (too large for the client)
                batch.waiting -= 1
                batch.error = batch.error or str(exc.args[0].str() if exc.args else exc)
                return

    def _commit_acknowledged(self, wait: bool = False) -> None:
        """Commit the oldest batches whose deliveries were all acknowledged, in order; a failed
        one drops itself and every batch after it, whose partitions are read again."""
        from confluent_kafka import KafkaException, TopicPartition

        consumer = self._consumer
        offsets: dict[Partition, int] = {}
        while self._batches and self._batches[0].waiting <= 0:
            batch = self._batches.popleft()
            if batch.error is not None:
                failed = [batch, *self._batches]
                self._batches.clear()
                self._read_again.update(p for b in failed for p in b.commits)
                log.error("filter stage: delivery failed (%s); re-reading from the last commit "
                          "(%d partitions)", batch.error, len(self._read_again))  # fmt: skip
                break
            offsets.update(batch.commits)
        if not offsets or consumer is None:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            if wait:
                consumer.commit(offsets=tps, asynchronous=False)
            else:
                consumer.commit(offsets=tps, asynchronous=True)
        except KafkaException as exc:  # the next commit covers them; a restart reads them again
            log.warning("filter stage: a commit failed: %s", exc)
            return
        for key, offset in offsets.items():
            if key in self._committed:  # still assigned
                self._committed[key] = offset
        self._progress_at = time.monotonic()

    async def _rewind(self) -> None:
        """After a failed delivery: the partitions of the dropped batches from their last commit
        (then a pause, so that a broker refusing every record is not asked again at once)."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        consumer = self._consumer
        partitions, self._read_again = self._read_again, set()
        if consumer is None:
            return
        for key in partitions:
            if key not in self._committed:  # revoked meanwhile: its new owner reads it
                continue
            offset = self._committed[key]
            try:
                consumer.seek(TopicPartition(*key, offset if offset >= 0 else OFFSET_BEGINNING))
            except KafkaException as exc:  # a restart reads them again from the commit
                raise FilterStageError(f"filter stage: cannot read {key[0]}:{key[1]} again from "
                                       f"offset {offset}: {exc}") from exc  # fmt: skip
        await asyncio.sleep(1.0)

    def _settle(self, timeout: float) -> None:
        """Wait up to `timeout` s for the batches in flight and commit what was acknowledged, in
        order; what was not is forgotten (read again later: duplicates, never a gap)."""
        producer = self._producer
        if producer is None or not self._batches:
            return
        deadline = time.monotonic() + timeout
        while any(b.waiting > 0 for b in self._batches) and time.monotonic() < deadline:
            producer.poll(0.05)
        self._commit_acknowledged(wait=True)
        if self._batches:
            log.warning("filter stage: %d batches not acknowledged in %.0f s; their records will "
                        "be read again", len(self._batches), timeout)  # fmt: skip
            self._batches.clear()

    def stop(self) -> None:
        self._stopping.set()

    def _close(self) -> None:
        consumer, producer = self._consumer, self._producer
        try:
            if consumer is not None:
                consumer.close()  # leaves the group (a revocation settles what is in flight)
        finally:
            self._consumer = self._producer = None
            self._batches.clear()
            if producer is not None:
                producer.flush(0)


def _names(tps: list[TopicPartition]) -> str:
    return ", ".join(sorted(f"{tp.topic}:{tp.partition}" for tp in tps)) or "none"
