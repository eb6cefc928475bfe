"""The filter stage in the worker: events -> suspects (flagged events, new templates' first
sightings, and an audit sample) and dead letters, each batch screened by `filtering.screen`.

`FilterStage` is the worker's loop, straight on aiokafka (Faust's per-message path costs ~100x
what this stage can afford; see docs/architecture.md). Per fetched batch and partition: screen,
produce, wait for the broker's acknowledgements, then commit. An offset is never committed before
everything derived from the records below it is acknowledged (at-least-once, no gaps). A
rebalance waits for the batch in flight, so revoked partitions are committed before they move.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sluice.models.filter import Filter, FilterModel, OnnxFilter
from sluice.stream.errors import FilterStageError
from sluice.stream.filtering.verdicts import FirstSight, VerdictCache
from sluice.stream.kafka.clients import aiokafka_config, unreachable
from sluice.stream.records import DeadLetter
from sluice.stream.settings import Settings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from prometheus_client import Histogram

    from sluice.stream.signals.counter import SignalCounter
    from sluice.stream.signals.spans import TelemetryFolder

from sluice.stream.filtering.screen import Screened, screen_batch

__all__ = [
    "FilterStage",
    "FilterStageError",
    "StageCounters",
]

log = logging.getLogger(__name__)


def _histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
    """A histogram of no registry: its owner measures, the metrics collector reads it."""
    from prometheus_client import Histogram

    return Histogram(name, doc, buckets=buckets, registry=None)


#: Seconds to screen one batch: 2,000 events take about 10 ms on one core.
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class StageCounters:
    """Running totals of the filter stage, read by `/metrics` and by `sluice scan`'s summary.

    Every record read is counted once: `consumed` = `events` + `dead` + `joined` where a record
    holds one event (an OTLP request holds many: `otlp_records` of them held `otlp_items`; a
    stack trace's lines are one event, the lines after its first `joined`), and `events` =
    `flagged` + unflagged, audit samples among the unflagged. A parsed event whose suspect
    record cannot be built is a dead letter, not an event.
    """

    batches: int = 0
    consumed: int = 0
    events: int = 0
    flagged: int = 0
    audited: int = 0
    dead: int = 0
    first_sight: int = 0
    by_verdict: int = 0
    held_back: int = 0
    first_sight_over_budget: int = 0
    verdicts_held: int = 0
    verdicts_evicted: int = 0
    dead_by_kind: Counter[str] = field(default_factory=Counter)
    otlp_records: int = 0
    joined: int = 0  # records that continued the one before: one event with it (`multiline`)
    exemplars: int = 0  # slow or failed spans forwarded as suspects (`signals.spans`)
    telemetry_rows_dropped: int = 0  # span and metric rows beyond a counts record's bound
    otlp_items: Counter[str] = field(default_factory=Counter)  # by signal: logs, traces, metrics
    ignored: Counter[tuple[str, str]] = field(default_factory=Counter)  # (field, its type)
    model_version: str = ""
    model_swaps: int = 0
    batch_seconds: Histogram = field(default_factory=lambda: _histogram(
        "sluice_filter_batch_seconds", "time to screen one fetched batch (parse, score, sample)",
        BATCH_SECONDS_BUCKETS))  # fmt: skip

    def add(self, screened: Screened, records: int, seconds: float) -> None:
        """Count one screened batch of `records` records."""
        self.consumed += records
        self.events += screened.events
        self.flagged += screened.flagged
        self.audited += screened.audited
        self.first_sight += screened.first_sight
        self.by_verdict += screened.by_verdict
        self.held_back += screened.held_back
        self.dead += len(screened.dead)
        self.dead_by_kind.update(d.kind for d in screened.dead)
        self.otlp_records += screened.otlp_records
        self.joined += screened.joined
        self.exemplars += screened.exemplars
        self.telemetry_rows_dropped += screened.telemetry_rows_dropped
        self.otlp_items.update(
            {"logs": screened.otlp_logs, "traces": screened.spans, "metrics": screened.points}
        )
        self.ignored.update(screened.ignored)
        self.batch_seconds.observe(seconds)

    def note(self, verdicts: VerdictCache | None, first: FirstSight | None) -> None:
        """Take the verdict cache's and the first-sight budget's running figures."""
        if verdicts is not None:
            self.verdicts_held, self.verdicts_evicted = len(verdicts), verdicts.evicted
        if first is not None:
            self.first_sight_over_budget = first.over_budget


class FilterStage:
    """The worker's events -> suspects loop on aiokafka; `run()` until `stop()`.

    Batches are pipelined: while the broker acknowledges what batch N produced, batch N+1 is
    fetched and screened. Commits stay in order: batch N+1's commit waits for batch N's, and a
    batch whose delivery failed fails every batch after it, whose partitions are then read again
    from their last commit (duplicates downstream, never a gap).
    """

    #: Batches produced but not yet committed; more waits for the oldest. Measured on HDFS lines,
    #: one core, stage alone: 2000/batch with 2 in flight 115k/s; 10000 with 4 in flight 200-250k/s.
    MAX_IN_FLIGHT = 4
    #: Bytes fetched per partition and request (aiokafka asks again when they are consumed).
    FETCH_BYTES = 4 << 20

    def __init__(
        self, settings: Settings, filt: Filter, models_ready: asyncio.Event | None = None
    ) -> None:
        self._settings = settings
        self._filter = filt
        self._models_ready = models_ready
        self._next_model: FilterModel | None = None
        self._lock = asyncio.Lock()  # screening and producing a batch; a rebalance waits for it
        self._stopping = asyncio.Event()
        self._in_flight: list[asyncio.Task[None]] = []
        self.counters = StageCounters(model_version=filt.version)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._committed: dict[Any, int] = {}  # assigned partition -> next offset to read
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

    def _make_clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        s, k = self._settings, self._settings.kafka
        opts = aiokafka_config(s.kafka)
        consumer = AIOKafkaConsumer(
            **opts,
            group_id=k.group_id,
            group_instance_id=f"{k.instance_id}-filter" if k.instance_id else None,
            client_id=f"sluice-filter-{k.instance_id or 'worker'}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(k.session_timeout_s * 1000),
            heartbeat_interval_ms=int(k.session_timeout_s * 1000 / 4),
            rebalance_timeout_ms=int(k.session_timeout_s * 1000),
            max_poll_interval_ms=300_000,
            max_partition_fetch_bytes=self.FETCH_BYTES,
        )
        producer = AIOKafkaProducer(
            **opts,
            acks="all",
            enable_idempotence=True,  # a retry after a leader change writes no duplicate
            linger_ms=5,
            max_batch_size=1 << 20,
            client_id="sluice-filter",
        )
        return consumer, producer

    async def run(self) -> None:
        """Consume, screen, produce, commit, until stopped; raises FilterStageError if it can't."""
        from aiokafka import ConsumerRebalanceListener
        from aiokafka.errors import KafkaError

        stage = self

        class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                async with stage._lock:  # what was produced is acknowledged and committed first
                    await stage._settle()
                log.info("filter stage: partitions revoked: %s", sorted(map(str, revoked)))

            async def on_partitions_assigned(self, assigned: Any) -> None:
                log.info("filter stage: partitions assigned: %s", sorted(map(str, assigned)))
                await stage._track(assigned)

        consumer, producer = self._make_clients()
        self._consumer, self._producer = consumer, producer
        try:
            await producer.start()
            await consumer.start()
        except KafkaError as exc:
            await self._close()
            raise FilterStageError(unreachable(self._settings.kafka, exc)) from exc
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
        consumer.subscribe([t.events, *t.otlp_signals()], listener=_Listener())
        try:
            while not self._stopping.is_set():
                # Not under the lock: aiokafka runs the revocation listener while a fetch waits.
                data = await consumer.getmany(
                    timeout_ms=200, max_records=self._settings.pipeline.batch_size
                )
                self._swap_if_offered()  # between batches, also while no events arrive
                if data:
                    async with self._lock:
                        await self._screen_and_send(consumer, producer, data)
                if self._in_flight and self._in_flight[-1].done():
                    await self._settle()
                if not any(self.lag().values()):
                    self._progress_at = time.monotonic()  # caught up: nothing to make progress on
            await self._settle()
        finally:
            await self._close()

    async def _track(self, assigned: Any) -> None:
        """Start the lag bookkeeping of newly assigned partitions from their committed offsets."""
        consumer = self._consumer
        if consumer is None:
            return
        self._committed = {tp: n for tp, n in self._committed.items() if tp in assigned}
        starts = await consumer.beginning_offsets(list(assigned)) if assigned else {}
        for tp in assigned:
            committed = await consumer.committed(tp)
            self._committed[tp] = committed if committed is not None else starts.get(tp, 0)
        self._progress_at = time.monotonic()  # a new assignment starts its own clock
        self.joined = True

    def lag(self) -> dict[tuple[str, int], int]:
        """Records not yet committed per assigned (topic, partition), as of the last fetch."""
        consumer = self._consumer
        if consumer is None:
            return {}
        out: dict[tuple[str, int], int] = {}
        for tp, committed in list(self._committed.items()):
            high = consumer.highwater(tp)
            if high is not None:
                out[(tp.topic, tp.partition)] = max(0, high - committed)
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

    async def _screen_and_send(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, data: dict[Any, list[Any]]
    ) -> None:
        t = self._settings.topics
        cfg = self._settings.pipeline
        signals = t.otlp_signals()
        pending: list[asyncio.Future[Any]] = []
        commits: dict[Any, int] = {}
        c = self.counters
        for tp, msgs in data.items():
            values = [m.value if m.value is not None else b"" for m in msgs]
            keys = [m.key for m in msgs]

            def source(i: int, _msgs: list[Any] = msgs) -> tuple[str, int | None, int | None]:
                m = _msgs[i]
                return m.topic, m.partition, m.offset

            times = [m.timestamp / 1000.0 for m in msgs]  # a text line without a time takes it
            started = time.perf_counter()
            try:
                screened = screen_batch(
                    values, keys, source, self._filter, cfg, times, self._signal_counter,
                    self.verdicts, self.first_sight, self.text, signals.get(tp.topic),
                    self._telemetry,
                )  # fmt: skip
            except Exception as exc:  # the filter itself failed: every record is a dead letter
                log.exception("filter stage: screening %d records of %s failed", len(msgs), tp)
                reason = f"filter failed: {type(exc).__name__}: {exc}"[:500]
                screened = Screened(dead=[DeadLetter.of(v, *source(i), reason)
                                          for i, v in enumerate(values)])  # fmt: skip
            seconds = time.perf_counter() - started
            for scope, counts in screened.counts:  # before the suspects they explain
                pending.append(await producer.send(t.suspects, value=counts, key=scope.encode()))
            for scope, messages in screened.messages.items():
                key = scope.encode()
                for value in messages:
                    pending.append(await producer.send(t.suspects, value=value, key=key))
            for d in screened.dead:
                log.warning("dead letter %s:%s:%s: %s", d.topic, d.partition, d.offset, d.reason)
                pending.append(await producer.send(t.deadletter, value=d.to_bytes()))
            commits[tp] = msgs[-1].offset + 1
            c.add(screened, len(msgs), seconds)
            c.note(self.verdicts, self.first_sight)
        c.batches += 1
        previous = self._in_flight[-1] if self._in_flight else None
        self._in_flight.append(
            asyncio.get_running_loop().create_task(
                self._acknowledge_and_commit(consumer, previous, pending, commits)
            )
        )
        while len(self._in_flight) > self.MAX_IN_FLIGHT:
            await asyncio.wait([self._in_flight[0]])
            self._in_flight.pop(0)

    async def _acknowledge_and_commit(
        self,
        consumer: AIOKafkaConsumer,
        previous: asyncio.Task[None] | None,
        pending: list[asyncio.Future[Any]],
        commits: dict[Any, int],
    ) -> None:
        if previous is not None:
            await previous  # commits in order; an earlier failure fails this batch too
        await asyncio.gather(*pending)  # every derived record acknowledged ...
        await consumer.commit(commits)  # ... before the offsets move
        for tp, offset in commits.items():
            if tp in self._committed:  # still assigned
                self._committed[tp] = offset
        self._progress_at = time.monotonic()

    async def _settle(self) -> None:
        """Wait for the batches in flight; after a failure, read again from the last commit."""
        from aiokafka.errors import KafkaError

        tasks, self._in_flight = self._in_flight, []
        results = await asyncio.gather(*tasks, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        consumer = self._consumer
        if not failures or consumer is None:
            return
        exc = failures[0]
        if not isinstance(exc, KafkaError | OSError | asyncio.TimeoutError):
            raise FilterStageError(f"filter stage failed: {exc!r}") from exc
        log.error(
            "filter stage: delivery or commit failed (%r); re-reading from the last commit", exc
        )
        for tp in consumer.assignment():
            committed = await consumer.committed(tp)
            if committed is not None:
                consumer.seek(tp, committed)
            else:
                await consumer.seek_to_beginning(tp)
        await asyncio.sleep(1.0)

    def stop(self) -> None:
        self._stopping.set()

    async def _close(self) -> None:
        for task in self._in_flight:
            task.cancel()
        self._in_flight = []
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        self._consumer = self._producer = None
