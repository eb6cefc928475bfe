"""The filter stage's logic on one batch, shared by `sluice scan` and the worker.

`screen_batch`: parse into columns, score with the filter, draw the audit sample, and build
records only for what is forwarded: one `SuspectBatch` message per scope, each suspect
serialized once (orjson). Per-template verdicts overrule the model (`filtering.verdicts`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from sluice.models.filter import Filter, FilterModel, OnnxFilter, default_model, normalize_batch
from sluice.stream.filtering.verdicts import FirstSight, VerdictCache, decide
from sluice.stream.ingest.envelopes import Ignored
from sluice.stream.ingest.multiline import continuation_groups
from sluice.stream.ingest.otlp import Signal
from sluice.stream.ingest.parsing import ParsedBatch, parse_batch
from sluice.stream.records import SCHEMA_VERSION, DeadLetter
from sluice.stream.settings import PipelineSettings

if TYPE_CHECKING:
    from sluice.stream.ingest.textformats import TextFormats
    from sluice.stream.signals.counter import SignalCounter
    from sluice.stream.signals.spans import TelemetryFolder

__all__ = ["MAX_SUSPECTS_MESSAGE_BYTES", "Screened", "audit_draws", "build_filter", "screen_batch"]

_UINT32 = float(2**32)


def _source_text(where: tuple[str, int | None, int | None]) -> str:
    name, partition, offset = where
    return name if partition is None else f"{name}:{partition}:{offset}"


#: A `suspects` message is split above this size (Kafka's default record limit is 1 MiB).
MAX_SUSPECTS_MESSAGE_BYTES = 900_000


_MAX_SUSPECT_BYTES = MAX_SUSPECTS_MESSAGE_BYTES - 1000  # room for the batch's head


def build_filter(cfg: PipelineSettings) -> OnnxFilter:
    """The filter the settings name: `model_path`, or the model that ships with Sluice."""
    return OnnxFilter(FilterModel.from_path(cfg.model_path) if cfg.model_path else default_model())


def audit_draws(values: Sequence[bytes]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A uniform draw in [0, 1) per record, fixed by its bytes: scan and worker sample alike."""
    crc = zlib.crc32
    return np.fromiter(map(crc, values), dtype=np.float64, count=len(values)) / _UINT32


def _item_draws(
    values: Sequence[bytes], index: Sequence[int], item_of: dict[int, int]
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """`audit_draws` where records hold many events: the CRC of the record's bytes (once a
    record), continued over the event's position in it."""
    crc = zlib.crc32
    of_record: dict[int, int] = {}
    out = np.empty(len(index), dtype=np.float64)
    for j, i in enumerate(index):
        base = of_record.get(i)
        if base is None:
            base = of_record[i] = crc(values[i])
        n = item_of.get(j)
        out[j] = crc(b"#%d" % n, base) if n is not None else base
    return out / _UINT32


@dataclass
class Screened:
    """What one batch became: suspect messages per scope, dead letters, and counts."""

    messages: dict[str, list[bytes]] = field(default_factory=dict)  # scope -> SuspectBatch JSON
    counts: list[tuple[str, bytes]] = field(default_factory=list)  # scope, SignalCounts JSON
    dead: list[DeadLetter] = field(default_factory=list)
    events: int = 0
    otlp_records: int = 0  # records that were OTLP requests, holding these:
    otlp_logs: int = 0  # log records that became events
    spans: int = 0  # spans decoded (`stream.ingest.otlp`; the root-cause work reads them)
    points: int = 0  # metric points decoded
    exemplars: int = 0  # spans forwarded as suspects (slow or failed: `signals.spans`)
    joined: int = 0  # records that continued the one before (a stack trace's lines)
    telemetry_rows_dropped: int = 0  # span and metric rows beyond a record's bound
    ignored: Ignored = field(default_factory=Ignored)  # fields of the wrong type, by field, type
    flagged: int = 0
    audited: int = 0
    first_sight: int = 0  # forwarded on a template's first sightings (counted among audited)
    by_verdict: int = 0  # forwarded by a relevant verdict the model did not flag
    held_back: int = 0  # flagged by the model, held back by a not-relevant verdict


def _encode(scope: str, parts: list[bytes]) -> list[bytes]:
    """SuspectBatch messages for one scope from serialized suspects, each under the size limit."""
    head = b'{"schema_version":%d,"kind":"suspects","scope":%s,"suspects":[' % (
        SCHEMA_VERSION,
        orjson.dumps(scope),
    )
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = len(head)
    for p in parts:
        if chunk and size + len(p) + 3 > MAX_SUSPECTS_MESSAGE_BYTES:
            out.append(head + b",".join(chunk) + b"]}")
            chunk, size = [], len(head)
        chunk.append(p)
        size += len(p) + 1
    if chunk:
        out.append(head + b",".join(chunk) + b"]}")
    return out


def _renumbered(
    source: Callable[[int], tuple[str, int | None, int | None]], starts: list[int]
) -> Callable[[int], tuple[str, int | None, int | None]]:
    """`source` of joined events: each is where its first record came from."""
    return lambda k: source(starts[k])


def screen_batch(
    values: Sequence[bytes],
    keys: Sequence[bytes | None],
    source: Callable[[int], tuple[str, int | None, int | None]],
    filt: Filter,
    cfg: PipelineSettings,
    record_times: Sequence[float] | None = None,
    counter: SignalCounter | None = None,
    verdicts: VerdictCache | None = None,
    first: FirstSight | None = None,
    text: TextFormats | None = None,
    signal: Signal | None = None,
    telemetry: TelemetryFolder | None = None,
) -> Screened:
    """parse -> score -> audit sample -> serialized suspects and dead letters, for one batch.

    `source(i)` names where record i came from: (topic or file:line, partition, offset);
    `record_times[i]` its timestamp (epoch seconds), the time of an event that has none. With
    signals enabled, every event is also counted per scope (`Screened.counts`) by `counter`
    (the stage's own, which follows traces across batches; without one, the batch alone).
    `verdicts` and `first` overrule and extend the model's flags (`stream.verdicts.decide`).
    Spans and metric points are folded by `telemetry` (the stage's own, which keeps children
    waiting for their parents across batches; without one, the batch alone) into counts, and
    their exemplars forwarded as suspects (`signals.spans`).
    Unflagged events cost the parse of their message, one cache lookup in the filter and one
    CRC of their bytes; only forwarded events get their other fields parsed and serialized.
    """
    out = Screened()
    if cfg.text.multiline and signal is None:  # a stack trace's lines: one event
        groups = continuation_groups(values, keys, cfg.max_event_bytes, cfg.text.max_lines)
        if groups is not None:
            starts, values = groups
            out.joined = len(keys) - len(values)
            keys = [keys[i] for i in starts]
            if record_times is not None:
                record_times = [record_times[i] for i in starts]
            source = _renumbered(source, starts)
    # a text line's format is per topic or file (no colon in a topic name; `TextFormats.keyed`)
    stream = source(0)[0].rsplit(":", 1)[0] if text is not None and values else ""
    parsed = parse_batch(values, cfg.max_event_bytes, text, keys=keys, stream=stream,
                         signal=signal, scope_attribute=cfg.scope_attribute,
                         field_paths=cfg.field_paths)  # fmt: skip
    out.otlp_records, out.ignored = parsed.otlp_records, parsed.ignored
    out.spans, out.points = len(parsed.spans), len(parsed.points)
    out.otlp_logs = len(parsed.item_of)
    parsed.record_times = record_times
    if text is not None and (record_times is None or cfg.signals.enabled):
        parsed.text_times(record_times)  # every line's: `scan` carries a time to the next
    for i, reason in parsed.dead:
        out.dead.append(DeadLetter.of(values[i], *source(i), reason))
    if (parsed.spans or parsed.points) and cfg.signals.telemetry:
        _telemetry(parsed, source, filt, cfg, telemetry, out)
    if not parsed.messages:
        return out
    out.events = len(parsed.messages)
    a = filt.assess(parsed.messages)
    if cfg.signals.enabled:
        from sluice.stream.signals.counter import SignalCounter

        if counter is None:
            counter = SignalCounter(cfg.signals.bucket_s, cfg.signals.trace_ttl_s)
        templates = a.templates if a.templates is not None else normalize_batch(parsed.messages)
        out.counts += _signal_counts(parsed, keys, record_times, cfg, templates, counter)
    if cfg.audit_rate > 0 or verdicts is not None or first is not None:
        if parsed.item_of:  # the log records of one OTLP request draw apart
            draws = _item_draws(values, parsed.index, parsed.item_of)
        else:
            draws = audit_draws([values[i] for i in parsed.index])
    else:
        draws = np.ones(len(parsed.messages))
    if verdicts is None and first is None:
        d = decide((), a.flagged, draws, cfg.audit_rate, None, None)
    else:
        templates = a.templates if a.templates is not None else normalize_batch(parsed.messages)
        d = decide(templates, a.flagged, draws, cfg.audit_rate, verdicts, first)
    out.first_sight, out.by_verdict, out.held_back = d.first_sight, d.by_verdict, d.held_back
    forward, audit, probability = d.forward, d.audit, d.probability
    chosen = np.flatnonzero(forward)
    if chosen.size == 0:
        return out
    by_scope: dict[str, list[bytes]] = {}
    scores = a.scores
    for j in chosen.tolist():
        i = parsed.index[j]
        where = source(i)
        try:
            ev = parsed.event(j, keys[i], cfg.default_service)
            is_audit = bool(audit[j])
            why = d.reason.get(j, "audit" if is_audit else "model")
            scope = ev["attributes"].get("scope") or cfg.scope
            ev["schema_version"] = SCHEMA_VERSION
            ev["source"] = _source_text(where) + (
                f"#{parsed.item_of[j]}" if j in parsed.item_of else ""
            )
            part = orjson.dumps(
                {
                    "schema_version": SCHEMA_VERSION,
                    "event": ev,
                    "score": float(scores[j]),
                    "model_version": a.model_version,
                    "audit": is_audit,
                    "sampling_probability": float(probability[j]) if is_audit else 1.0,
                    "scope": scope,
                    "reason": why,
                    "verdict": d.verdict.get(j),
                },
                option=orjson.OPT_UTC_Z,
            )
        except Exception as exc:  # a field no rule foresaw: a dead letter, never a crash
            out.dead.append(DeadLetter.of(values[i], *where, f"unusable event: {exc!r}"[:500]))
            out.events -= 1  # a dead letter, not an event: consumed = events + dead
            continue
        if len(part) > _MAX_SUSPECT_BYTES:  # it could never be delivered: say so, don't retry
            reason = f"forwarded event of {len(part)} bytes exceeds a suspects record"
            out.dead.append(DeadLetter.of(values[i], *where, reason))
            out.events -= 1
            continue
        by_scope.setdefault(scope, []).append(part)
        if is_audit:
            out.audited += 1
        else:
            out.flagged += 1
    for scope, parts in by_scope.items():
        out.messages.setdefault(scope, []).extend(_encode(scope, parts))
    return out


def _signal_counts(
    parsed: ParsedBatch,
    keys: Sequence[bytes | None],
    record_times: Sequence[float] | None,
    cfg: PipelineSettings,
    templates: Sequence[str],
    counter: SignalCounter,
) -> list[tuple[str, bytes]]:
    """Every event's time, service, trace and line shape, counted per scope for the signals."""
    ts, services, traces, scopes = parsed.signal_columns(
        keys, record_times, cfg.default_service, cfg.scope
    )
    rows: dict[str, list[int]] = {}
    for j, scope in enumerate(scopes):
        rows.setdefault(scope, []).append(j)
    if len(rows) == 1:
        (scope,) = rows
        return [(scope, counter.count(scope, ts, services, traces, templates).to_bytes())]
    return [
        (
            scope,
            counter.count(
                scope,
                [ts[j] for j in js],
                [services[j] for j in js],
                [traces[j] for j in js],
                [templates[j] for j in js],
            ).to_bytes(),
        )
        for scope, js in rows.items()
    ]


def _telemetry(
    parsed: ParsedBatch,
    source: Callable[[int], tuple[str, int | None, int | None]],
    filt: Filter,
    cfg: PipelineSettings,
    folder: TelemetryFolder | None,
    out: Screened,
) -> None:
    """Spans and points folded into counts per scope; exemplar spans become suspects."""
    from sluice.stream.signals.spans import TelemetryFolder

    if folder is None:
        folder = TelemetryFolder(cfg.signals.bucket_s)
    before = folder.dropped
    rows, exemplars = folder.fold(parsed.spans, parsed.points, cfg.scope, cfg.default_service,
                                  parsed.span_records)  # fmt: skip
    out.counts += [(scope, rec.to_bytes()) for scope, rec in rows.items()]
    out.telemetry_rows_dropped = folder.dropped - before
    by_scope: dict[str, list[bytes]] = {}
    for x in exemplars:
        ev = dict(x.event)
        ev["ts"] = datetime.fromtimestamp(ev["ts"], UTC)
        ev["schema_version"] = SCHEMA_VERSION
        ev["source"] = _source_text(source(x.record)) if x.record >= 0 else None
        part = orjson.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "event": ev,
                "score": 1.0,
                "model_version": filt.version,
                "audit": False,
                "sampling_probability": 1.0,
                "scope": x.scope,
                "reason": "model",
                "verdict": None,
                "exemplar": x.event["attributes"]["sluice.exemplar"],
            },
            option=orjson.OPT_UTC_Z,
        )
        by_scope.setdefault(x.scope, []).append(part)
    out.exemplars += len(exemplars)
    for scope, parts in by_scope.items():
        out.messages.setdefault(scope, []).extend(_encode(scope, parts))
