"""Kafka is the model registry: filter models and which one is active travel on the `models` topic.

Two kinds of record, told apart by key (the topic is compacted, one partition):
- `model/<version>`: the ONNX bytes of a published model. The file is self-describing (its
  metadata holds version, parent version, threshold, training-set size, validation figures,
  created at and by); a `sluice-info` header adds the registry's own notes (the champion and
  challenger figures on held-out labels, who published it).
- `active`: the ONNX bytes of the version every worker must use, with a `sluice-activation`
  header (version, the versions active before it, why, by whom, when). Promotion and rollback
  are such records too, so every worker agrees on the active version, and a worker needs only the
  latest `active` record to start on it.

Models are ~1 MB and can be larger than Kafka's default 1 MiB record limit: the topic is created
with `max.message.bytes` of 16 MiB (`broker.topic_specs`) and the producers here allow as much.

`ModelWatcher` is the worker side: it reads the whole topic itself (assigned, outside the consumer
group), loads each activation in a thread, and hands valid models to the filter stage, which swaps
them between batches. An invalid record is logged with its offset and the current model stays.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sluice.stream.errors import RecordError, RegistryError
from sluice.stream.kafka.clients import client_config, unreachable
from sluice.stream.kafka.followers import open_assigned
from sluice.stream.kafka.topics import MAX_RECORD_BYTES, read_topic
from sluice.stream.records import read_record
from sluice.stream.settings import Settings

if TYPE_CHECKING:
    from sluice.models.filter import FilterModel, ModelMetadata

__all__ = [
    "ACTIVE_KEY",
    "Activation",
    "ModelWatcher",
    "Registry",
    "RegistryEntry",
    "RegistryError",
    "activate",
    "publish_model",
    "read_registry",
]

log = logging.getLogger(__name__)

ACTIVE_KEY = b"active"
_MODEL_PREFIX = b"model/"
_KIND = "sluice-kind"
_INFO = "sluice-info"
_ACTIVATION = "sluice-activation"
#: Versions remembered as "active before" in each activation (what rollback can go back to).
MAX_HISTORY = 50


class Activation(BaseModel):
    """Which version is active, and the ones active before it (newest last)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    previous: list[str] = Field(default_factory=list)
    reason: Literal["retrain", "promote", "rollback"]
    by: str
    at: datetime


@dataclass
class RegistryEntry:
    """A published model as the registry knows it."""

    version: str
    data: bytes
    meta: ModelMetadata
    offset: int
    published_at: datetime | None
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = json.loads(self.meta.model_dump_json())
        d.update(size_bytes=len(self.data), offset=self.offset, registry=self.info)
        return d


@dataclass
class Registry:
    """The `models` topic read as state: published models, the active one, rejected records."""

    entries: dict[str, RegistryEntry] = field(default_factory=dict)
    active: Activation | None = None
    rejected: list[str] = field(default_factory=list)

    def apply(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[Any],
        where: str,
        offset: int,
        timestamp_ms: int | None = None,
    ) -> None:
        """Fold one record in; an unusable one is named in `rejected` and logged, never raised."""
        try:
            if key is not None and key.startswith(_MODEL_PREFIX):
                model = load_model(value, where)
                info = json.loads(_header(headers, _INFO) or b"{}")
                at = datetime.fromtimestamp(timestamp_ms / 1000, UTC) if timestamp_ms else None
                self.entries[model.version] = RegistryEntry(
                    model.version, model.data, model.meta, offset, at, info
                )
            elif key == ACTIVE_KEY:  # as a worker would: a bad activation changes nothing
                self.active = activated_model(value, headers, where)[1]
            else:
                raise RegistryError(f"{where}: unknown key {key!r}")
        except (RegistryError, ValueError) as exc:
            log.error("models record rejected: %s", exc)
            self.rejected.append(str(exc))

    def entry(self, version: str) -> RegistryEntry:
        """The entry of a version, or of the only version starting with it (a prefix)."""
        if version in self.entries:
            return self.entries[version]
        hits = [v for v in self.entries if v.startswith(version)]
        if len(hits) != 1:
            known = ", ".join(self.entries) or "none"
            raise RegistryError(f"no single published version matches {version!r} (known: {known})")
        return self.entries[hits[0]]


def _header(headers: Iterable[Any], name: str) -> bytes | None:
    for k, v in headers or ():
        if k == name:
            return bytes(v) if v is not None else None
    return None


def load_model(value: bytes | None, where: str) -> FilterModel:
    """A model record's bytes as a loaded model; RegistryError names the record otherwise."""
    from sluice.models.filter import FilterError, FilterModel

    if not value:
        raise RegistryError(f"{where}: empty model record")
    try:
        return FilterModel(value, source=where)
    except FilterError as exc:
        raise RegistryError(str(exc)) from None


def activation_of(headers: Iterable[Any], where: str) -> Activation:
    raw = _header(headers, _ACTIVATION)
    if raw is None:
        raise RegistryError(f"{where}: activation without a {_ACTIVATION} header")
    try:
        return read_record(Activation, raw, "activation")
    except RecordError as exc:
        raise RegistryError(f"{where}: {exc}") from None


def activated_model(
    value: bytes | None, headers: Iterable[Any], where: str
) -> tuple[FilterModel, Activation]:
    """An `active` record's model and activation, checked to name the same version."""
    act = activation_of(headers, where)
    model = load_model(value, where)
    if model.version != act.version:
        raise RegistryError(
            f"{where}: activation names {act.version}, its bytes are {model.version}"
        )
    return model, act


def read_registry(settings: Settings) -> Registry:
    """The whole `models` topic, folded."""
    reg = Registry()
    topic = settings.topics.models
    for r in read_topic(settings, topic):
        reg.apply(
            r.key, r.value, r.headers, f"{topic}:{r.partition}:{r.offset}", r.offset, r.timestamp
        )
    return reg


def _producer(settings: Settings) -> Any:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        return KafkaProducer(
            **client_config(settings.kafka),
            acks="all",
            max_request_size=MAX_RECORD_BYTES,
            client_id="sluice-registry",
        )
    except KafkaError as exc:
        raise RegistryError(unreachable(settings.kafka, exc)) from exc


def _send(settings: Settings, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    from kafka.errors import KafkaError

    producer = _producer(settings)
    try:
        for key, value, headers in records:
            producer.send(settings.topics.models, key=key, value=value, headers=headers).get(60)
    except KafkaError as exc:
        raise RegistryError(f"writing to {settings.topics.models} failed: {exc}") from exc
    finally:
        producer.close(timeout=10)


def _model_record(model: FilterModel, info: dict[str, Any]) -> tuple[bytes, bytes, list[Any]]:
    headers = [(_KIND, b"model"), (_INFO, json.dumps(info).encode())]
    return _MODEL_PREFIX + model.version.encode(), model.data, headers


def publish_model(
    settings: Settings,
    model: FilterModel,
    info: dict[str, Any],
    *,
    activate_as: Literal["retrain", "promote"] | None = None,
    by: str = "sluice",
    registry: Registry | None = None,
) -> Activation | None:
    """Publish a model; with `activate_as`, make it the active version in the same call."""
    records = [_model_record(model, info)]
    act = None
    if activate_as is not None:
        reg = registry if registry is not None else read_registry(settings)
        act = _activation(reg, model.version, activate_as, by)
        records.append(_active_record(model.data, act))
    _send(settings, records)
    return act


def _activation(reg: Registry, version: str, reason: Any, by: str) -> Activation:
    history = [*reg.active.previous, reg.active.version] if reg.active else []
    return Activation(
        version=version,
        previous=history[-MAX_HISTORY:],
        reason=reason,
        by=by,
        at=datetime.now(UTC),
    )


def _active_record(data: bytes, act: Activation) -> tuple[bytes, bytes, list[Any]]:
    return ACTIVE_KEY, data, [(_KIND, b"activate"), (_ACTIVATION, act.model_dump_json().encode())]


def activate(
    settings: Settings, version: str, reason: Literal["promote", "rollback"], by: str
) -> Activation:
    """Make a published version the active one (`sluice model promote|rollback`)."""
    reg = read_registry(settings)
    entry = reg.entry(version)
    act = _activation(reg, entry.version, reason, by)
    if reason == "rollback":  # going back pops the history instead of growing it
        act = act.model_copy(update={"previous": reg.active.previous[:-1] if reg.active else []})
    _send(settings, [_active_record(entry.data, act)])
    return act


def rollback_target(reg: Registry) -> str:
    """The version active before the current one."""
    if reg.active is None or not reg.active.previous:
        raise RegistryError("nothing to roll back to: no earlier active version")
    return reg.active.previous[-1]


class ModelWatcher:
    """A worker's view of the `models` topic: hands every valid activation to `on_model`.

    It reads the whole topic from the start with its own consumer, assigned (not in the group),
    so every worker sees every activation. At start-up it loads only the latest activation, then
    sets `ready`; the filter stage waits for that before its first batch.
    """

    def __init__(
        self,
        settings: Settings,
        on_model: Callable[[FilterModel, Activation], None],
        ready: asyncio.Event | None = None,
    ) -> None:
        self._settings = settings
        self._on_model = on_model
        self.ready = ready if ready is not None else asyncio.Event()
        self._stopping = asyncio.Event()
        self.active: Activation | None = None
        self.rejected = 0

    async def run(self) -> None:
        topic = self._settings.topics.models
        consumer, end = await open_assigned(self._settings, topic, "sluice-models")
        tps = list(end)
        try:
            latest: Any = None
            while not self.ready.is_set():  # catch up: only the last activation matters
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                    break
                data = await consumer.getmany(timeout_ms=500)
                for msgs in data.values():
                    for m in msgs:
                        if m.key == ACTIVE_KEY:
                            latest = m
            if latest is not None:
                await self._load(latest)
            self.ready.set()
            log.info(
                "models: caught up with %s (active: %s)",
                topic,
                self.active.version if self.active else "none, the configured model",
            )
            while not self._stopping.is_set():
                data = await consumer.getmany(timeout_ms=500)
                for msgs in data.values():
                    for m in msgs:
                        if m.key == ACTIVE_KEY:
                            await self._load(m)
        finally:
            self.ready.set()
            await consumer.stop()

    async def _load(self, m: Any) -> None:
        where = f"{m.topic}:{m.partition}:{m.offset}"
        loop = asyncio.get_running_loop()
        try:
            model, act = await loop.run_in_executor(
                None, activated_model, m.value, m.headers, where
            )
        except RegistryError as exc:
            self.rejected += 1
            log.error("models: rejected %s; keeping the current model", exc)
            return
        self.active = act
        log.info("models: %s activates %s (%s by %s)", where, act.version, act.reason, act.by)
        self._on_model(model, act)

    def stop(self) -> None:
        self._stopping.set()
