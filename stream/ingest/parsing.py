"""Parsing `events`: a JSON object or a plain text line -> an event, or a reason it cannot be one.

Two entry points over one set of rules:

- `parse_batch` is the filter stage's hot path. It works on a whole fetched batch and extracts
  only what the filter needs from every record (the message text); the other fields (time,
  service, level, trace, attributes) are worked out by `ParsedBatch.event` only for the few events
  that are forwarded. No pydantic model is built per record.
- `parse_event` parses one record into a validated `Event` (tests, tools).

Records that hold other records are unpacked first: an OTLP logs request (the OpenTelemetry
Collector's Kafka exporter, protobuf or JSON; its file exporter's lines) gives one event per log
record (`stream.ingest.otlp`), and a shipper's envelope (Fluent Bit, Vector, ECS, Docker, CRI)
gives the event inside it (`stream.ingest.envelopes`). The line such a record carries goes through
the plain-text formats like any line; the names the record gives (service, host, level) come
first. Spans and metric points are decoded and counted (`ParsedBatch.spans`, `.points`). Binary
that is neither UTF-8 nor OTLP is a dead letter ("binary record"), never a text line.

Text is text unless it parses as a JSON object: a line that starts with `[` (Apache error logs,
Proxifier) or is any other JSON value is a text line. A line that starts with `{` but is not valid
JSON is a dead letter ("invalid JSON"): it is a structured producer's broken record, and saying so
helps more than scoring its braces. Bytes that are not UTF-8 (mixed encodings in one file) are
decoded with U+FFFD in their place: the rest of the line is still evidence. Event times are kept
only within 1970..2262 (the range of nanosecond epochs); others are no time at all, so that no
window arithmetic downstream can overflow.

Why one module: the batch path and `ParsedBatch.event` share the rules above line by line (which
field names a service, when a line's header or its envelope wins); apart, they would drift.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from sluice.stream.errors import ParseError
from sluice.stream.ingest.envelopes import Ignored, name_or_count, unwrap, unwrap_cri, with_paths
from sluice.stream.ingest.formats import LineFormat, TextHeader
from sluice.stream.ingest.otlp import LINE_KEY, Signal, is_otlp_json
from sluice.stream.ingest.textformats import Read, TextFormats
from sluice.stream.ingest.times import MAX_CLOCK_SKEW_S, epoch, in_range, parse_ts
from sluice.stream.ingest.unpack import Unpacker, is_binary, looks_like_otlp_logs
from sluice.stream.records import Event

__all__ = ["ParseError", "ParsedBatch", "parse_batch", "parse_event"]

_TS_KEYS = ("ts", "timestamp", "@timestamp", "time", "Timestamp")
_SERVICE_KEYS = ("service", "app", "application", "logger", "service_name", "PodName")
_HOST_KEYS = ("host", "hostname", "Node", "node")
_LEVEL_KEYS = ("level", "severity", "lvl", "loglevel")
_MESSAGE_KEYS = ("message", "msg", "log", "Log", "text")
_TRACE_KEYS = ("trace_id", "traceId", "TraceID", "trace")
_SPAN_KEYS = ("span_id", "spanId", "SpanID", "span")
_USED_KEYS = frozenset(
    _TS_KEYS + _SERVICE_KEYS + _HOST_KEYS + _LEVEL_KEYS + _MESSAGE_KEYS + _TRACE_KEYS + _SPAN_KEYS
)
_LEVELS = (
    "FATAL",
    "CRITICAL",
    "ERROR",
    "SEVERE",
    "WARNING",
    "WARN",
    "NOTICE",
    "INFO",
    "DEBUG",
    "TRACE",
)
_LEVEL_RE = re.compile(r"\b(" + "|".join(_LEVELS) + r")\b", re.IGNORECASE)
_SURROGATE = re.compile("[\ud800-\udfff]")
_POD_HASH = re.compile(r"-[0-9a-f]{8,10}-[0-9a-z]{5}$")
#: An OTLP/JSON request's opening: it may pass the per-event maximum (each event is held to it).
_OTLP_JSON, _MAX_REQUEST = re.compile(rb'\s*\{\s*"resource(?:Logs|Spans|Metrics)"'), 16 << 20


def _first(obj: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        v = obj.get(k)
        if v is not None and v != "":
            return v
    return None


def _level_of(text: str) -> str:
    m = _LEVEL_RE.search(text[:200])
    if not m:
        return ""
    level = m.group(1).upper()
    return "WARN" if level == "WARNING" else level


def _loads(raw: bytes) -> Any:
    """JSON with orjson (fast); what orjson refuses goes to the standard library, which decides.

    The standard library accepts more (NaN, Infinity, integers beyond 64 bits), and a user's
    producer may well be Python's `json`: such records are events, not dead letters.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return _without_surrogates(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise ParseError(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ParseError("invalid JSON: nested too deeply") from None


def _without_surrogates(value: Any) -> Any:
    """The standard library accepts lone surrogates (`"\\ud800"`), which no UTF-8 writer can
    encode: each becomes U+FFFD, so the event can still be forwarded."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    return value


def _message_of(obj: dict[str, Any]) -> str:
    message = _first(obj, _MESSAGE_KEYS)
    if isinstance(message, str) and message.lstrip().startswith("{"):
        try:  # container runtimes wrap the line: {"log": "...", "stream": ...}
            inner = orjson.loads(message)
            if isinstance(inner, dict) and isinstance(inner.get("log"), str):
                message = inner["log"]
        except orjson.JSONDecodeError:
            pass
    if message is None:
        raise ParseError("JSON object without a message field (message, msg, log, text)")
    if not isinstance(message, str):
        message = json.dumps(message) if isinstance(message, dict | list) else str(message)
    return message.rstrip("\n")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _named(obj: dict[str, Any], keys: tuple[str, ...], field: str, ignored: Ignored) -> str | None:
    """The first value of `keys` as a name: a string, or ECS's `{"name": ...}`; a value of
    another type is ignored and counted, never printed as a name."""
    value = _first(obj, keys)
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        value = value["name"]
    return name_or_count(value, field, ignored)


def _json_fields(
    obj: dict[str, Any], message: str, fallback_service: str, ignored: Ignored
) -> dict[str, Any]:
    service = _named(obj, _SERVICE_KEYS, "service", ignored)
    level = _named(obj, _LEVEL_KEYS, "level", ignored)
    level_s = level.upper() if level is not None else _level_of(message)
    return {
        "ts": parse_ts(_first(obj, _TS_KEYS)) or parse_ts(message[:64]),
        "service": _POD_HASH.sub("", service or "") or fallback_service,
        "host": _named(obj, _HOST_KEYS, "host", ignored),
        "level": "WARN" if level_s == "WARNING" else level_s,
        "message": message,
        "trace_id": _text(_first(obj, _TRACE_KEYS)),
        "span_id": _text(_first(obj, _SPAN_KEYS)),
        "attributes": {
            k: _text(v) or "" for k, v in obj.items() if k not in _USED_KEYS and k != LINE_KEY
        },
    }


def _merge_header(fields: dict[str, Any], h: TextHeader) -> None:
    """A wrapped line's header fills in what its envelope did not name (service, host, level)."""
    if not fields["level"] or fields["level"] == _level_of(fields["message"]):
        fields["level"] = h.level or fields["level"]
    fields["host"] = fields["host"] or h.host
    fields["attributes"].update({k: v for k, v in h.attributes.items() if v})
    if h.pid is not None:
        fields["attributes"]["pid"] = h.pid
    fields["attributes"]["format"] = h.format


def _line_fields(line: str, service: str) -> dict[str, Any]:
    return {
        "ts": parse_ts(line[:64]),
        "service": service,
        "host": None,
        "level": _level_of(line),
        "message": line,
        "trace_id": None,
        "span_id": None,
        "attributes": {},
    }


def _key_service(key: bytes | None) -> str | None:
    return key.decode("utf-8", errors="replace") if key else None


def _header_fields(h: TextHeader, service: str) -> dict[str, Any]:
    attributes = dict(h.attributes)
    if h.pid is not None:
        attributes["pid"] = h.pid
    attributes["format"] = h.format
    return {
        "ts": None,
        "service": h.service or service,
        "host": h.host,
        "level": h.level,
        "message": h.message,
        "trace_id": None,
        "span_id": None,
        "attributes": attributes,
    }


@dataclass
class ParsedBatch:
    """Columns of one parsed batch: `messages[j]` is the text of input record `index[j]`;
    `headers[j]` a text line matched in its format (None: JSON, or plain text), `sources[j]` the
    source its format was detected for."""

    messages: list[str] = field(default_factory=list)
    index: list[int] = field(default_factory=list)
    objects: list[dict[str, Any] | None] = field(default_factory=list)
    dead: list[tuple[int, str]] = field(default_factory=list)  # input position, reason
    spans: list[dict[str, Any]] = field(default_factory=list)  # OTLP spans, compact
    points: list[dict[str, Any]] = field(default_factory=list)  # OTLP metric points, compact
    span_records: list[int] = field(default_factory=list)  # per span: the record it came in
    otlp_records: int = 0  # records that were OTLP requests (each holds many items)
    item_of: dict[int, int] = field(default_factory=dict)  # j -> its log record's position
    ignored: Ignored = field(default_factory=Ignored)  # fields of the wrong type, not used
    headers: list[Read | None] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    text: TextFormats | None = None
    record_times: Sequence[float] | None = None  # each input record's timestamp (the worker)
    _times: list[float] | None = None
    _time_from: dict[int, str] = field(default_factory=dict)

    def event(self, j: int, key: bytes | None, default_service: str) -> dict[str, Any]:
        """Every field of the j-th parsed event (an `Event`'s fields, less schema and source)."""
        service = _key_service(key)
        obj = self.objects[j]
        read = self.headers[j] if self.headers else None
        if obj is not None:
            text = self.text
            if read is None or text is None:
                return _json_fields(obj, self.messages[j], service or default_service, self.ignored)
            header = text.full(read)  # a wrapped line: the envelope's names first, then its own
            fields = _json_fields(
                obj, self.messages[j], service or header.service or default_service, self.ignored
            )
            _merge_header(fields, header)
            own = in_range(text.time_of(read, fields["ts"].timestamp() if fields["ts"] else None))
            if own is not None:
                fields["ts"] = datetime.fromtimestamp(own, UTC)
            return fields
        fallback = self.text.fallback_service if self.text is not None else None
        service = service or fallback or default_service
        if read is not None and self.text is not None:
            fields = _header_fields(self.text.full(read), service)
            fields["message"] = self.messages[j]  # with the lines that continue it, if any
        else:
            fields = _line_fields(self.messages[j], service)
        if self._times is not None:  # every line's, with what a line without one inherits
            t = self._times[j]
        elif read is not None and self.text is not None:  # this line's alone: its header's, or
            own = in_range(self.text.time_of(read, self._record_time(j)))
            t = own if own is not None else self._record_time(j)
            if own is None and not math.isnan(t):
                self._time_from[j] = "record"
        else:
            t = math.nan if fields["ts"] is None else fields["ts"].timestamp()
            if fields["ts"] is None and not math.isnan(self._record_time(j)):
                t, self._time_from[j] = self._record_time(j), "record"
        fields["ts"] = datetime.fromtimestamp(t, UTC) if in_range(t) is not None else None
        if j in self._time_from and fields["ts"] is not None:
            fields["attributes"]["time_from"] = self._time_from[j]
        return fields

    def _record_time(self, j: int) -> float:
        rt = self.record_times
        return rt[self.index[j]] if rt is not None else math.nan

    def text_times(self, record_times: Sequence[float] | None) -> list[float]:
        """Each text line's time (epoch seconds; NaN for JSON rows, which have their own): its
        header's, else one written at its start, else the record's timestamp (the worker),
        else its predecessor's in the same source (`scan`), said in `time_from`. Computed once."""
        if self._times is not None:
            return self._times
        nan = math.nan
        text = self.text
        last = text.last_time if text is not None else {}
        times: list[float] = []
        for j, obj in enumerate(self.objects):
            if obj is not None:
                times.append(nan)
                continue
            i = self.index[j]
            rec = record_times[i] if record_times is not None else None
            read = self.headers[j] if self.headers else None
            t: float | None
            if read is not None and text is not None:
                t = in_range(text.time_of(read, rec))
            else:
                at = parse_ts(self.messages[j][:64])
                t = at.timestamp() if at is not None else None
            src = self.sources[j] if self.sources else ""
            if t is None:
                if rec is not None and not math.isnan(rec):
                    t, self._time_from[j] = rec, "record"
                elif src in last:
                    t, self._time_from[j] = last[src], "previous line"
            if t is None:
                times.append(nan)
                continue
            if j not in self._time_from:
                last[src] = t
            times.append(t)
        self._times = times
        return times

    def signal_columns(
        self,
        keys: Sequence[bytes | None],
        record_times: Sequence[float] | None,
        default_service: str,
        default_scope: str,
    ) -> tuple[list[float], list[str], list[str | None], list[str]]:
        """What the signal counters need of every event, not only the forwarded ones: its time
        (epoch seconds; the record's timestamp for a text line or a JSON event without one, NaN
        without either; the batch's median for a time more than a day from it, so replayed old
        logs keep their own times and one hostile time cannot move a scope's clock), service,
        trace id and scope. Text lines: `text_times`, and their header's service."""
        nan = math.nan
        text_ts = self.text_times(record_times) if self.text is not None else None
        fallback_service = self.text.fallback_service if self.text is not None else None
        seconds: dict[object, float | None] = {}  # times of one batch share their second
        pods: dict[str, str] = {}  # and their services (a pod name's hash costs a regex)
        ts: list[float] = []
        services: list[str] = []
        traces: list[str | None] = []
        scopes: list[str] = []
        for j, obj in enumerate(self.objects):
            i = self.index[j]
            fallback = record_times[i] if record_times is not None else nan
            if obj is None:
                read = self.headers[j] if self.headers else None
                ts.append(text_ts[j] if text_ts is not None else fallback)
                services.append(
                    (self.text.service(read) if read is not None and self.text else None)
                    or _key_service(keys[i])
                    or fallback_service
                    or default_service
                )
                traces.append(None)
                scopes.append(default_scope)
                continue
            # the usual key first (a call less per event), then the others in order
            when = obj.get("ts")
            t = epoch(when if when is not None and when != "" else _first(obj, _TS_KEYS), seconds)
            ts.append(t if t is not None else fallback)
            service = obj.get("service")
            if type(service) is not str or not service:
                service = _named(obj, _SERVICE_KEYS, "service", Ignored())  # counted once: event
            if service:
                name = pods.get(service)
                if name is None:
                    name = pods[service] = _POD_HASH.sub("", service) or default_service
                services.append(name)
            else:
                services.append(_key_service(keys[i]) or default_service)
            trace = obj.get("trace_id")
            if type(trace) is not str or not trace:
                trace = _text(_first(obj, _TRACE_KEYS))
            traces.append(trace)
            scope = obj.get("scope")
            scopes.append((scope if type(scope) is str else _text(scope)) or default_scope)
        known = sorted(t for t in ts if not math.isnan(t))
        if known:  # one hostile time must not move a scope's clock: a day off the batch's median
            mid = known[len(known) // 2]
            ts = [mid if abs(t - mid) > MAX_CLOCK_SKEW_S else t for t in ts]  # NaN stays NaN
        return ts, services, traces, scopes


def parse_batch(
    values: Sequence[bytes],
    max_bytes: int,
    formats: TextFormats | None = None,
    sources: Sequence[str] | None = None,
    keys: Sequence[bytes | None] | None = None,
    stream: str = "",
    signal: Signal | None = None,
    scope_attribute: str | None = None,
    field_paths: Mapping[str, str] | None = None,
) -> ParsedBatch:
    """Parse a batch; a record that is not an event is listed in `dead` with the reason.

    With `formats`, a text line's header is read in the format of its source (`sources[i]`;
    else `stream`, the topic or file, or the record's key where the settings give it a pattern),
    and its message is the header-less one. `signal`: every record is an OTLP request of it (an
    `otlp_*` topic); without, OTLP is recognised per record. `scope_attribute`: the resource
    attribute that names an OTLP record's analysis scope. `field_paths`: an event field -> the
    dotted path of a JSON record's value for it (`service`: `kubernetes.labels.team`)."""
    out = ParsedBatch(text=formats)
    messages, index, objects, dead = out.messages, out.index, out.objects, out.dead
    headers, srcs = out.headers, out.sources
    unpack = Unpacker(out, max_bytes, formats, stream, scope_attribute)
    known = None  # the lines of a source whose format is known, read in one tight loop
    if formats is not None and sources is None and signal is None and \
            (fmt := formats.batch_format(stream)) is not None:  # fmt: skip
        known = _read_known(values, fmt, formats, max_bytes)
        if None not in known:  # the usual case: every record of the batch is such a line
            n = len(values)
            messages[:] = [r[0] for r in known]  # type: ignore[index]
            headers[:] = [(fmt, r[1]) for r in known]  # type: ignore[index]
            index[:], srcs[:], objects[:] = range(n), [stream] * n, [None] * n
            return out
    for i, raw in enumerate(values):
        if known is not None and (got := known[i]) is not None:
            messages.append(got[0])
            headers.append((got[2], got[1]))
            srcs.append(stream)
            objects.append(None)
            index.append(i)
            continue
        if signal is not None:  # an OTLP topic: protobuf or JSON, told apart by the first byte
            unpack.otlp(i, raw, None, signal)
            continue
        if raw[:1] == b"\n" and is_binary(raw) and looks_like_otlp_logs(raw):
            unpack.otlp(i, raw, None, "logs")  # protobuf's first field, and a request's shape
            continue
        if len(raw) > max_bytes and not (len(raw) <= _MAX_REQUEST and _OTLP_JSON.match(raw)):
            dead.append((i, f"event of {len(raw)} bytes exceeds the maximum of {max_bytes}"))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            if is_binary(raw):
                dead.append((i, "binary record: not UTF-8 text, not an OTLP logs request"))
                continue
            text = raw.decode("utf-8", errors="replace")  # mixed encodings: still a log line
            raw = text.encode()
        if text.startswith("\ufeff"):  # a byte order mark is not part of the line
            text = text[1:]
            raw = text.encode()
        head = text[:1]
        if head.isspace() or not head:
            head = text.lstrip()[:1]
            if not head:
                dead.append((i, "empty event"))
                continue
        obj: dict[str, Any] | None = None
        if head == "{":  # (a JSON array is a text line: `[` opens Apache's and Proxifier's)
            try:
                value = _loads(raw)
                if isinstance(value, dict):
                    if (otlp := is_otlp_json(value)) is not None:
                        unpack.otlp(i, None, value, otlp)
                        continue
                    if ("kubernetes" in value or "@timestamp" in value or "stream" in value) and (
                        inner := unwrap(value, out.ignored)
                    ) is not None:
                        unpack.item(i, with_paths(inner, value, field_paths))
                        continue
                    obj = with_paths(value, value, field_paths)
                    messages.append(_message_of(obj))
            except ParseError as exc:  # a structured producer's broken record
                dead.append((i, str(exc)))
                continue
            except Exception as exc:  # a value no rule foresaw: a dead letter, never a crash
                dead.append((i, f"unparseable event: {type(exc).__name__}"))
                continue
        header: Read | None = None
        src = ""
        if obj is None:  # text, or JSON that is not an object (`[Sun Dec 04 ...] [error] ...`)
            line = text.rstrip("\r\n")
            if line[:2] == "20" and (cri := unwrap_cri(line)) is not None:  # the kubelet's
                when, std, wrapped = cri
                unpack.item(i, {"message": wrapped, "ts": when, "stream": std, LINE_KEY: True})
                continue
            if formats is not None:
                if sources is not None:
                    src = sources[i]
                else:  # the stream (topic or file), or a key with a pattern of its own
                    k = keys[i] if keys is not None else None
                    src = stream
                    if k and formats.keyed(key := k.decode("utf-8", "replace")):
                        src = key
                first, joined, rest = line.partition("\n")  # a stack trace's lines: read
                header, line = formats.read(src, first)  # the header of the first alone
                if joined:
                    line = f"{line}\n{rest}"
            messages.append(line)
        if formats is not None:
            headers.append(header)
            srcs.append(src)
        objects.append(obj)
        index.append(i)
    return out


def _read_known(
    values: Sequence[bytes], fmt: LineFormat, formats: TextFormats, max_bytes: int
) -> list[tuple[str, re.Match[str], LineFormat] | None]:
    """Per record, (message, match, format) where it is one plain line that `fmt` matches, read
    as `parse_batch`'s loop reads it (the same regex, the same prefix) without its general
    path's calls (`parse_batch` on HDFS lines: 2.2 us a line instead of 3.3); None where that
    path must read it: not UTF-8, too large, blank, a leading space, `{` or byte order mark, more
    than one line, a CRI line, or not in `fmt`."""
    match, keys, one = fmt.regex.match, fmt.keys, len(fmt.keys) == 1
    prefixes: dict[Any, str] = {}
    out: list[tuple[str, re.Match[str], LineFormat] | None] = []
    append = out.append
    for raw in values:
        if len(raw) > max_bytes:
            append(None)
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            append(None)
            continue
        head = line[:1]
        if (not head or head == "{" or head == "\ufeff" or head.isspace() or "\n" in line
                or "\r" in line or (head == "2" and unwrap_cri(line) is not None)):  # fmt: skip
            append(None)
            continue
        m = match(line)
        if m is None:
            append(None)
            continue
        key: Any = m.group(keys[0]) if one else m.group(*keys) if keys else None
        prefix = prefixes.get(key)
        if prefix is None:
            parts: tuple[str | None, ...] = (key,) if one else key if keys else ()
            prefix = prefixes[key] = formats.prefix(fmt, dict(zip(keys, parts, strict=True)))[0]
        body = m.group("body")
        append((prefix + body if body else prefix.rstrip(), m, fmt))
    return out


def parse_event(
    raw: bytes, key: bytes | None, default_service: str, max_bytes: int, source: str | None = None
) -> Event:
    """One record of `events` to an Event; raises ParseError with the reason otherwise."""
    batch = parse_batch([raw], max_bytes)
    if batch.dead:
        raise ParseError(batch.dead[0][1])
    try:
        return Event(**batch.event(0, key, default_service), source=source)
    except Exception as exc:
        raise ParseError(f"invalid event fields: {type(exc).__name__}") from None
