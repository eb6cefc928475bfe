"""The worker's analysis stage on Faust: one agent over `suspects`, its state in a table.

Everything that changes the state enters through the agent, in partition order: suspect batches
from the filter stage, `Tick`s from each worker's timer (idle windows close, retries come due),
and `Analysed` results of analyses that ran concurrently outside the stream (up to
`llm.concurrency`; the stream never waits for the LLM). Faust tables can only be changed inside
stream iteration, and this keeps every change on the partition it belongs to.

Per record: apply it to a staged view of the state; publish what became final (alerts, feedback,
dead letters) and wait for the broker's acknowledgements; then write the state, including the
record's offset. Faust flushes the producer (table changelog included) before it commits an
offset. After a crash the new owner restores the table from its changelog (from a standby
replica when one is warm) and skips records whose offset the state already holds; a record whose
effects were published but whose state was lost is published again with the same revision and
the same content (its time comes from the `Analysed` record, not the clock).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import TP

from sluice.models.analyst import Analyst, create_analyst
from sluice.stream.analysis.effects import AnalysisCounters, Published
from sluice.stream.analysis.machine import AnalysisState
from sluice.stream.analysis.store import ChunkCache, StagedStore
from sluice.stream.analysis.triage import NewTemplates
from sluice.stream.analysis.windows import ClosedWindow, bundle_of
from sluice.stream.delivery.controls import Controls
from sluice.stream.errors import StateVersionError
from sluice.stream.kafka.clients import ssl_context
from sluice.stream.records import (
    DeadLetter,
    Tick,
)
from sluice.stream.settings import Settings

__all__ = ["AnalysisProgress", "create_app"]

log = logging.getLogger(__name__)

_TABLE = "state"


def _app_id(settings: Settings) -> str:
    """The analysis stage's consumer group; `broker.state_changelog_topic` follows this name."""
    return f"{settings.kafka.group_id}-analysis"


def _broker_credentials(settings: Settings) -> Any:
    k = settings.kafka
    context = ssl_context(k)
    if not k.security_protocol.startswith("SASL"):
        return faust.SSLCredentials(context) if context else None
    password = k.sasl_password.get_secret_value() if k.sasl_password else ""
    return faust.SASLCredentials(
        username=k.sasl_username or "",
        password=password,
        mechanism=k.sasl_mechanism,
        ssl_context=context,
    )


class _TableStore:
    """A StateStore over a Faust table (bytes keys and values, changelog-backed)."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, key: str) -> bytes | None:
        value = self._table.get(key.encode())
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes) -> None:
        self._table[key.encode()] = value

    def delete(self, key: str) -> None:
        k = key.encode()
        if k in self._table:
            del self._table[k]


def create_app(
    settings: Settings,
    *,
    analyst: Analyst | None = None,
    counters: AnalysisCounters | None = None,
    controls: Controls | None = None,
    progress: AnalysisProgress | None = None,
) -> faust.App:
    """Build the analysis stage's Faust app from settings (agents run with concurrency 1).

    `counters`, when given, receives what each suspects record did once its effects are
    committed (the worker's metrics); `controls`, the acks and silences alerts are marked with;
    `progress`, the records handled (the worker's liveness and lag)."""
    t, cfg = settings.topics, settings.pipeline
    app = _faust_app(settings)
    stage = _Stage(app, settings, analyst or create_analyst(settings.llm), counters, controls)
    if progress is not None:
        progress.attach(app)
        stage.progress = progress

    @app.agent(stage.suspects, concurrency=1)
    async def analyse_suspects(stream: Any) -> None:
        async for ev in stream.events():
            m = ev.message
            value = ev.value if isinstance(ev.value, bytes) else b""
            await stage.on_record(m.topic, m.partition, m.offset, value)

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def triage_new_templates() -> None:
        """New templates' verdicts to `feedback` within a second or two of their first
        sighting (`triage`); a failure leaves them to their windows' analyses."""
        try:
            judged = await stage.triage.judge(stage.analyst, lambda: datetime.now(UTC))
            await stage.outputs.publish(Published(feedback=judged))
        except Exception:
            log.exception("triage of new templates failed; their windows will judge them")

    @app.timer(interval=max(0.5, min(cfg.idle_close_s / 2, 5.0)))  # type: ignore[untyped-decorator]
    async def tick() -> None:
        for tp in app.consumer.assignment():
            if tp.topic == t.suspects:
                await stage.suspects.send(value=Tick().to_bytes(), partition=tp.partition)

    return app


def _faust_app(settings: Settings) -> faust.App:
    """The Faust app's configuration: the broker, the group, the table's home, raw bytes."""
    k = settings.kafka
    return faust.App(
        _app_id(settings),
        broker=[f"kafka://{b}" for b in k.bootstrap_servers.split(",")],
        broker_credentials=_broker_credentials(settings),
        broker_session_timeout=k.session_timeout_s,
        broker_heartbeat_interval=max(1.0, k.session_timeout_s / 4),
        consumer_group_instance_id=f"{k.instance_id}-analysis" if k.instance_id else None,
        store="memory://",
        table_standby_replicas=settings.worker.standby_replicas,
        datadir=str(settings.worker.data_dir),
        web_enabled=settings.worker.web_port is not None,
        web_port=settings.worker.web_port or 6066,
        topic_partitions=k.partitions,
        topic_replication_factor=k.replication_factor,
        topic_allow_declare=False,  # `sluice topics create` owns the topology
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=4 << 20,  # a table chunk may hold a whole suspects record
        producer_acks=-1,  # every in-sync replica: with min.insync.replicas=2 a broker may die
        key_serializer="raw",  # every Sluice record, the table's changelog included, is bytes
        value_serializer="raw",
    )


def _raw_topic(app: faust.App, name: str) -> Any:
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


class _Outputs:
    """The stage's output topics: what a record produced, sent and acknowledged in order."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        t = settings.topics
        self._alerts, self._feedback = _raw_topic(app, t.alerts), _raw_topic(app, t.feedback)
        self._outcomes, self._dead = _raw_topic(app, t.outcomes), _raw_topic(app, t.deadletter)

    async def publish(self, out: Published) -> None:
        sent = []
        for a in out.alerts:
            sent.append(await self._alerts.send(key=a.fingerprint.encode(), value=a.to_bytes()))
        for f in out.feedback:
            sent.append(await self._feedback.send(key=f.key().encode(), value=f.to_bytes()))
        for o in out.outcomes:
            sent.append(await self._outcomes.send(key=o.key().encode(), value=o.to_bytes()))
        for d in out.dead:
            log.warning("dead letter (analysis): %s", d.reason)
            sent.append(await self._dead.send(value=d.to_bytes()))
        for fut in sent:
            await fut  # acknowledged by the broker before the state moves on

    async def dead_letter(self, letter: DeadLetter) -> None:
        await (await self._dead.send(value=letter.to_bytes()))


async def _until_delivered(what: str, where: str, attempt: Callable[[], Awaitable[None]]) -> None:
    """Retry a delivery to the broker until it is acknowledged: the record stays unacked (the
    partition waits) rather than be dropped. Errors other than the broker's propagate."""
    from aiokafka.errors import KafkaError

    for n in itertools.count():
        try:
            await attempt()
            return
        except (KafkaError, TimeoutError) as exc:
            delay = min(30.0, 0.5 * 2**n)
            log.warning("%s for %s failed (%r); retrying in %.1f s", what, where, exc, delay)
            await asyncio.sleep(delay)


class _Gaps:
    """Records the stream dropped, read again.

    Faust clears its stream buffers when it resumes after a rebalance or a table's recovery
    (`FlowControlEvent.resume`), and the consumer reads on after what it had fetched: a record
    fetched but not yet handed to the agent (one waiting while the agent awaited the broker) is
    never applied, and the partition's commit stops below it. The suspects topic has no gaps of
    its own (no compaction, no transactions), so a record past the next expected offset means
    such a loss: the partition is read again from the gap, and the records after it wait for
    their turn. A gap the topic no longer holds (retention) is given up after a minute, said.

    The first record of a partition after an assignment is checked too, against `first(topic,
    partition)`: the offset after the last one the state applied (the state is flushed before
    an offset is committed, so nothing after it was ever applied), or the topic's earliest when
    the state holds none. The records dropped at a resume can be a partition's first ones: a
    worker read a partition from offset 3 and its commit went on from there (measured, the
    SIGKILL test; Faust commits from the first offset it saw acknowledged when none was
    committed before).
    """

    GIVE_UP_S = 60.0
    SEEK_AGAIN_S = 2.0

    def __init__(self, app: faust.App, first: Callable[[str, int], Awaitable[int]]) -> None:
        self._app = app
        self._first = first
        self._next: dict[int, int] = {}  # partition -> the offset expected next
        self._rewinding: dict[int, tuple[int, float, float]] = {}  # -> (gap, since, sought)

        @app.on_partitions_revoked.connect  # type: ignore[arg-type]
        async def forget(_app: Any, revoked: Any, **_: Any) -> None:
            for tp in revoked:  # its next owner reads from the committed offset
                self._next.pop(tp.partition, None)
                self._rewinding.pop(tp.partition, None)

    async def in_order(self, topic: str, partition: int, offset: int) -> bool:
        """Whether to apply the record at `offset` now (else it comes again after the gap)."""
        now = time.monotonic()
        rewinding = self._rewinding.get(partition)
        if rewinding is not None:
            gap, since, sought = rewinding
            if offset > gap and now - since < self.GIVE_UP_S:
                if now - sought >= self.SEEK_AGAIN_S:  # what was in flight ran past the seek
                    await self._seek(topic, partition, gap, since)
                return False
            del self._rewinding[partition]
            if offset > gap:
                log.error(
                    "%s:%s: offsets %d-%d are gone; going on", topic, partition, gap, offset - 1
                )
        else:
            expected = self._next.get(partition)
            if expected is None:
                expected = await self._first(topic, partition)
            if offset > expected:
                log.warning(
                    "%s:%s: the stream skipped offsets %d-%d (a rebalance or a recovery); "
                    "reading them again", topic, partition, expected, offset - 1,
                )  # fmt: skip
                await self._seek(topic, partition, expected, now)
                return False
        self._next[partition] = offset + 1
        return True

    async def _seek(self, topic: str, partition: int, gap: int, since: float) -> None:
        self._rewinding[partition] = (gap, since, time.monotonic())
        await self._app.consumer.seek_wait({TP(topic, partition): gap})


class _Stage:
    """The analysis stage in the worker: each record of `suspects` applied to the state machine
    over the Faust table, its effects published, then the state committed."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        analyst: Analyst,
        counters: AnalysisCounters | None,
        controls: Controls | None,
    ) -> None:
        k, t, cfg = settings.kafka, settings.topics, settings.pipeline
        self._cfg, self._topic = cfg, t.suspects
        self.suspects = _raw_topic(app, t.suspects)
        self.outputs = _Outputs(app, settings)
        self._table = app.Table(_TABLE, key_type=bytes, value_type=bytes, partitions=k.partitions)
        self.analyst = analyst
        self._runner = _Runner(settings, analyst, self.suspects)
        self.triage = NewTemplates(cfg, counters=counters.triage) if counters else NewTemplates(cfg)
        self._chunks = ChunkCache()  # parsed suspects of open windows, shared by every record
        self._counters, self._controls = counters, controls
        self._gaps = _Gaps(app, self._first_expected)
        self._app = app
        self.progress: AnalysisProgress | None = None

    async def _first_expected(self, topic: str, partition: int) -> int:
        """The offset a partition's first record after an assignment must have (`_Gaps`)."""
        state = AnalysisState(self._cfg, _TableStore(self._table), time.time, self._topic)
        applied = state.last_applied(partition)
        if applied >= 0:
            return applied + 1
        tp = TP(topic, partition)
        return (await self._app.consumer.earliest_offsets(tp)).get(tp, 0)

    async def on_record(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        """Apply a record until its effects are delivered; one the stage cannot apply becomes a
        dead letter saying why (Faust would acknowledge it silently)."""
        if not await self._gaps.in_order(topic, partition, offset):
            return
        if self.progress is not None:
            self.progress.handled(partition, offset)
        where = f"{topic}:{partition}:{offset}"
        try:
            await _until_delivered(
                "publishing", where, lambda: self._apply(partition, offset, value)
            )
        except Exception as exc:
            log.exception("analysis of %s failed", where)
            letter = DeadLetter.of(value, topic, partition, offset, _failure(exc))
            await _until_delivered(
                "the dead letter", where, lambda: self.outputs.dead_letter(letter)
            )

    async def _apply(self, partition: int, offset: int, value: bytes) -> None:
        staged = StagedStore(_TableStore(self._table))
        state = AnalysisState(
            self._cfg, staged, time.time, self._topic, self._chunks, self._controls, self.triage
        )
        effects = state.apply(partition, offset, value)
        if effects.replayed:
            return
        await self.outputs.publish(effects)
        staged.commit()  # the state moves on only once its effects are acknowledged
        if self._counters is not None:
            self._counters.merge(state.counters)
        for scope, seq, attempt in effects.due:
            self._runner.launch(partition, scope, seq, attempt, state)


class AnalysisProgress:
    """The analysis stage's lag and progress, for `/healthz` and `/metrics` (as the filter
    stage's `lag()` and `stalled_s()`).

    Lag per assigned suspects partition: the records after the last one the stage handled. Every
    worker's timer writes a tick to each of its suspects partitions every few seconds, so a
    stage that handles nothing while assigned records wait is stuck, not idle: stalled seconds
    count from its last handled record (or its assignment), and not while Faust rebalances or
    restores the table (that is progress of its own)."""

    def __init__(self, topic: str) -> None:
        self._topic = topic
        self._app: faust.App | None = None
        self._next: dict[int, int] = {}  # partition -> the offset after the last one handled
        self._progress_at = time.monotonic()
        self.joined = False  # the group gave the stage its partitions (maybe none)

    def attach(self, app: faust.App) -> None:
        self._app = app

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]
        async def assigned(_app: Any, assigned: Any, **_: Any) -> None:
            self._next = {p: o for p, o in self._next.items()
                          if TP(self._topic, p) in assigned}  # fmt: skip
            self._progress_at = time.monotonic()
            self.joined = True

    def handled(self, partition: int, offset: int) -> None:
        self._next[partition] = offset + 1
        self._progress_at = time.monotonic()

    def lag(self) -> dict[tuple[str, int], int]:
        """Records after the last handled one per assigned partition (a partition none of whose
        records was handled yet counts all it holds beyond that: its highwater)."""
        app = self._app
        if app is None:
            return {}
        out: dict[tuple[str, int], int] = {}
        consumer = app.consumer
        for tp in consumer.assignment():
            if tp.topic != self._topic:
                continue
            high = consumer.highwater(tp)
            if high is not None:
                out[(tp.topic, tp.partition)] = max(0, high - self._next.get(tp.partition, 0))
        return out

    def stalled_s(self) -> float:
        """Seconds with records waiting and none handled (0 while none wait, or Faust rebalances
        or recovers the table)."""
        app = self._app
        if app is None or app.rebalancing or app.in_recovery or not any(self.lag().values()):
            self._progress_at = time.monotonic()
            return 0.0
        return time.monotonic() - self._progress_at


def _failure(exc: Exception) -> str:
    """A dead letter's reason for a record the stage could not apply: Sluice's own words (the
    exception's text may quote a scope, which comes from log text)."""
    if isinstance(exc, StateVersionError):
        return (
            f"analysis state written by a newer release (state version {exc.found}; this "
            f"release reads up to {exc.known}): upgrade this worker"
        )
    return f"analysis stage failed: {type(exc).__name__}"


def open_windows(app: faust.App, settings: Settings) -> int:
    """Windows open now in the analysis table, over the suspects partitions this worker owns
    (not its standby copies)."""
    store = _TableStore(app.tables[_TABLE])
    state = AnalysisState(settings.pipeline, store, time.time, settings.topics.suspects)
    partitions = [
        tp.partition for tp in app.consumer.assignment() if tp.topic == settings.topics.suspects
    ]
    return sum(len(state.scope_state(scope).open) for p in partitions for scope in state.scopes(p))


class _Runner:
    """Runs window analyses concurrently (up to llm.concurrency) and reports back via Kafka.

    A window stays "launched" until its result has come back through the stream: between the
    report and its turn in the partition the window still looks due, and must not run twice.
    A report that never arrives (the send failed, the partition moved) is relaunched after
    `relaunch_after_s`.
    """

    def __init__(self, settings: Settings, analyst: Analyst, suspects_t: Any) -> None:
        self._analyst = analyst
        self._topic = suspects_t
        self._limit = asyncio.Semaphore(settings.llm.concurrency)
        self._launched: dict[tuple[str, int, int], float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.relaunch_after_s = max(60.0, 4 * settings.llm.timeout_s)

    def launch(
        self, partition: int, scope: str, seq: int, attempt: int, state: AnalysisState
    ) -> None:
        key = (scope, seq, attempt)
        now = time.monotonic()
        since = self._launched.get(key)
        if since is not None and now - since < self.relaunch_after_s:
            return
        if len(self._launched) > 10_000:  # forget reports long since applied
            cutoff = now - self.relaunch_after_s
            self._launched = {k: t for k, t in self._launched.items() if t >= cutoff}
        self._launched[key] = now
        task = asyncio.get_running_loop().create_task(
            self._run(partition, state.window(scope, seq))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, partition: int, w: ClosedWindow) -> None:
        async with self._limit:
            try:
                rec = w.analysed(await self._analyst.analyze(bundle_of(w)), datetime.now(UTC))
            except Exception as exc:  # the analyst promises not to raise; bounded if it does
                log.exception("analysis of window %s %s raised", w.scope, w.start)
                rec = w.failed(type(exc).__name__, datetime.now(UTC))
        try:
            await self._topic.send(key=w.scope.encode(), value=rec.to_bytes(), partition=partition)
        except Exception:
            log.exception(
                "reporting the analysis of %s %s failed; a tick retries", w.scope, w.start
            )
