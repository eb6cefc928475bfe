"""The Faust application factory: no module-level app, so tests and workers build their own."""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import faust
from pydantic import ValidationError

from models.analyst import Analyst, create_analyst
from models.filter import Filter, FilterModel, OnnxFilter, default_model
from stream._parse import ParseError, parse_event
from stream._pipeline import AlertBook, ClosedWindow, WindowCollector, analyse_window, screen
from stream._records import DeadLetter, Suspect
from stream._settings import PipelineSettings, Settings

__all__ = ["build_filter", "create_app"]

log = logging.getLogger(__name__)


def build_filter(cfg: PipelineSettings) -> OnnxFilter:
    return OnnxFilter(FilterModel.from_path(cfg.model_path) if cfg.model_path else default_model())


def _broker_credentials(settings: Settings) -> Any:
    k = settings.kafka
    if not k.security_protocol.startswith("SASL"):
        return None
    password = k.sasl_password.get_secret_value() if k.sasl_password else ""
    return faust.SASLCredentials(
        username=k.sasl_username or "",
        password=password,
        mechanism=k.sasl_mechanism,
        ssl_context=None,
    )


def create_app(
    settings: Settings, *, filt: Filter | None = None, analyst: Analyst | None = None
) -> faust.App:
    """Build the Faust app and its agents from settings.

    Agents run with concurrency 1: with more, Faust can commit offsets past in-flight messages
    (faust-streaming #606). Faust acks a message whose processing raised, so every record's
    processing is guarded: a record that cannot be processed goes to `deadletter` with the reason.
    """
    k, t, cfg = settings.kafka, settings.topics, settings.pipeline
    app = faust.App(
        k.group_id,
        broker=[f"kafka://{b}" for b in k.bootstrap_servers.split(",")],
        broker_credentials=_broker_credentials(settings),
        store="memory://",
        datadir=str(settings.worker.data_dir),
        web_enabled=settings.worker.web_port is not None,
        web_port=settings.worker.web_port or 6066,
        topic_partitions=k.partitions,
        topic_replication_factor=k.replication_factor,
        topic_allow_declare=False,  # `sluice topics create` owns the topology
        consumer_auto_offset_reset="earliest",
    )

    def raw(name: str) -> Any:
        return app.topic(
            name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    events_t, suspects_t, alerts_t = raw(t.events), raw(t.suspects), raw(t.alerts)
    feedback_t, dead_t = raw(t.feedback), raw(t.deadletter)
    the_filter = filt or build_filter(cfg)
    the_analyst = analyst or create_analyst(settings.llm)
    collector = WindowCollector(cfg, time.monotonic)
    book = AlertBook()
    retry: list[tuple[ClosedWindow, int]] = []

    async def dead_letter(
        value: bytes, topic: str, partition: int | None, offset: int | None, reason: str
    ) -> None:
        log.warning("dead letter %s:%s:%s: %s", topic, partition, offset, reason)
        await dead_t.send(value=DeadLetter.of(value, topic, partition, offset, reason).to_bytes())

    @app.agent(events_t, concurrency=1)
    async def filter_events(stream: Any) -> None:
        async for batch in stream.take_events(cfg.batch_size, within=0.5):
            parsed, raws = [], []
            for ev in batch:
                m, value = ev.message, ev.value if isinstance(ev.value, bytes) else b""
                try:
                    parsed.append(
                        parse_event(
                            value,
                            ev.key,
                            cfg.default_service,
                            cfg.max_event_bytes,
                            f"{m.topic}:{m.partition}:{m.offset}",
                        )
                    )
                    raws.append((value, m))
                except ParseError as exc:
                    await dead_letter(value, m.topic, m.partition, m.offset, str(exc))
                except Exception as exc:  # never let one record take the batch down
                    await dead_letter(
                        value,
                        m.topic,
                        m.partition,
                        m.offset,
                        f"unexpected {type(exc).__name__}: {exc}",
                    )
            try:
                suspects = screen(parsed, the_filter, cfg)
            except Exception as exc:
                log.exception("scoring a batch of %d events failed", len(parsed))
                for value, m in raws:
                    await dead_letter(
                        value,
                        m.topic,
                        m.partition,
                        m.offset,
                        f"filter failed: {type(exc).__name__}: {exc}",
                    )
                continue
            for s in suspects:
                await suspects_t.send(key=s.scope.encode(), value=s.to_bytes())

    async def process(w: ClosedWindow, attempt: int = 0) -> None:
        try:
            alerts, feedback, analysis = await analyse_window(
                w, the_analyst, book, cfg, lambda: datetime.now(UTC)
            )
        except Exception:
            log.exception("analysis of window %s %s failed; kept for retry", w.scope, w.start)
            retry.append((w, attempt + 1))
            return
        for a in alerts:
            await alerts_t.send(key=a.fingerprint.encode(), value=a.to_bytes())
        for f in feedback:
            key = hashlib.sha256(f.template.encode()).hexdigest()[:16].encode()
            await feedback_t.send(key=key, value=f.to_bytes())
        if analysis.provenance.analysis == "degraded" and attempt < cfg.degraded_retries:
            retry.append((w, attempt + 1))  # the LLM was down: analyse again later

    @app.agent(suspects_t, concurrency=1)
    async def analyse_suspects(stream: Any) -> None:
        async for ev in stream.events():
            m, value = ev.message, ev.value if isinstance(ev.value, bytes) else b""
            try:
                suspect = Suspect.model_validate_json(value)
            except ValidationError as exc:
                await dead_letter(
                    value,
                    m.topic,
                    m.partition,
                    m.offset,
                    f"not a Suspect record: {exc.errors()[0]['msg']}",
                )
                continue
            for w in collector.add(suspect):
                await process(w)

    @app.timer(interval=max(1.0, min(cfg.idle_close_s / 2, 10.0)))  # type: ignore[untyped-decorator]
    async def close_idle_windows() -> None:
        for w in collector.close_idle():
            await process(w)
        due, retry[:] = list(retry), []
        for w, attempt in due:
            await process(w, attempt)

    return app
