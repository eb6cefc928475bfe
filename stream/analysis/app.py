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
from datetime import UTC, datetime
from typing import Any

import faust

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

__all__ = ["create_app"]

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
) -> faust.App:
    """Build the analysis stage's Faust app from settings (agents run with concurrency 1).

    `counters`, when given, receives what each suspects record did once its effects are
    committed (the worker's metrics); `controls`, the acks and silences alerts are marked with."""
    k, t, cfg = settings.kafka, settings.topics, settings.pipeline
    app = faust.App(
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

    def raw(name: str) -> Any:
        return app.topic(
            name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    suspects_t, alerts_t = raw(t.suspects), raw(t.alerts)
    feedback_t, outcomes_t, dead_t = raw(t.feedback), raw(t.outcomes), raw(t.deadletter)
    table = app.Table(_TABLE, key_type=bytes, value_type=bytes, partitions=k.partitions)
    the_analyst = analyst or create_analyst(settings.llm)
    runner = _Runner(settings, the_analyst, suspects_t)
    triage = NewTemplates(cfg, counters=counters.triage) if counters else NewTemplates(cfg)
    chunks = ChunkCache()  # parsed suspects of open windows, shared by every record's handling

    async def publish(out: Published) -> None:
        sent = []
        for a in out.alerts:
            sent.append(await alerts_t.send(key=a.fingerprint.encode(), value=a.to_bytes()))
        for f in out.feedback:
            sent.append(await feedback_t.send(key=f.key().encode(), value=f.to_bytes()))
        for o in out.outcomes:
            sent.append(await outcomes_t.send(key=o.key().encode(), value=o.to_bytes()))
        for d in out.dead:
            log.warning("dead letter (analysis): %s", d.reason)
            sent.append(await dead_t.send(value=d.to_bytes()))
        for fut in sent:
            await fut  # acknowledged by the broker before the state moves on

    async def handle(partition: int, offset: int, value: bytes) -> None:
        staged = StagedStore(_TableStore(table))
        state = AnalysisState(cfg, staged, time.time, t.suspects, chunks, controls, triage)
        effects = state.apply(partition, offset, value)
        if effects.replayed:
            return
        await publish(effects)
        staged.commit()  # the state moves on only once its effects are acknowledged
        if counters is not None:
            counters.merge(state.counters)
        for scope, seq, attempt in effects.due:
            runner.launch(partition, scope, seq, attempt, state)

    async def until_delivered(what: str, where: str, attempt: Any) -> None:
        """Retry a delivery to the broker until it is acknowledged: the record stays unacked
        (the partition waits) rather than be dropped. Errors other than the broker's propagate."""
        from aiokafka.errors import KafkaError

        for n in itertools.count():
            try:
                await attempt()
                return
            except (KafkaError, TimeoutError) as exc:
                delay = min(30.0, 0.5 * 2**n)
                log.warning("%s for %s failed (%r); retrying in %.1f s", what, where, exc, delay)
                await asyncio.sleep(delay)

    @app.agent(suspects_t, concurrency=1)
    async def analyse_suspects(stream: Any) -> None:
        async for ev in stream.events():
            m = ev.message
            where = f"{m.topic}:{m.partition}:{m.offset}"
            value = ev.value if isinstance(ev.value, bytes) else b""
            try:
                await until_delivered(
                    "publishing",
                    where,
                    lambda p=m.partition, o=m.offset, v=value: handle(p, o, v),
                )
            except Exception as exc:  # Faust would ack it silently: say why, as a dead letter
                log.exception("analysis of %s failed", where)
                reason = _failure(exc)
                letter = DeadLetter.of(value, m.topic, m.partition, m.offset, reason).to_bytes()

                async def send_letter(letter: bytes = letter) -> None:
                    await (await dead_t.send(value=letter))

                await until_delivered("the dead letter", where, send_letter)

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def triage_new_templates() -> None:
        """New templates' verdicts to `feedback` within a second or two of their first
        sighting (`_triage`); a failure leaves them to their windows' analyses."""
        try:
            judged = await triage.judge(the_analyst, lambda: datetime.now(UTC))
            await publish(Published(feedback=judged))
        except Exception:
            log.exception("triage of new templates failed; their windows will judge them")

    tick_s = max(0.5, min(cfg.idle_close_s / 2, 5.0))

    @app.timer(interval=tick_s)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        for tp in app.consumer.assignment():
            if tp.topic == t.suspects:
                await suspects_t.send(value=Tick().to_bytes(), partition=tp.partition)

    return app


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
