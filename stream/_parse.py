"""Parsing `events`: a JSON object or a plain text line -> Event, or a reason it cannot be one."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from pydantic import ValidationError

from models.filter import decode_line
from stream._records import Event

__all__ = ["ParseError", "parse_event"]

_TS_KEYS = ("ts", "timestamp", "@timestamp", "time", "Timestamp")
_SERVICE_KEYS = ("service", "app", "application", "logger", "service_name", "PodName")
_HOST_KEYS = ("host", "hostname", "Node", "node")
_LEVEL_KEYS = ("level", "severity", "lvl", "loglevel")
_MESSAGE_KEYS = ("message", "msg", "log", "Log", "text")
_TRACE_KEYS = ("trace_id", "traceId", "TraceID", "trace")
_SPAN_KEYS = ("span_id", "spanId", "SpanID", "span")
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
_ISO_RE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
_POD_HASH = re.compile(r"-[0-9a-f]{8,10}-[0-9a-z]{5}$")


class ParseError(Exception):
    """Why a record is not an event; its message becomes the dead-letter reason."""


def _first(obj: dict[str, object], keys: tuple[str, ...]) -> object | None:
    for k in keys:
        v = obj.get(k)
        if v not in (None, ""):
            return v
    return None


def _parse_ts(value: object) -> datetime | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):  # epoch seconds, millis or nanos
        v = float(value)
        while v > 1e11:
            v /= 1000
        return datetime.fromtimestamp(v, tz=UTC)
    if isinstance(value, str):
        m = _ISO_RE.search(value)
        if m:
            s = m.group(0).replace(",", ".").replace(" ", "T")
            if "." in s:  # Python parses at most microseconds
                head, _, frac = s.partition(".")
                digits = re.match(r"\d+", frac)
                n = digits.group(0) if digits else ""
                s = f"{head}.{n[:6].ljust(6, '0')}{frac[len(n) :]}"
            dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
            return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return None


def _service_from_pod(pod: str) -> str:
    return _POD_HASH.sub("", pod)


def _level_of(text: str) -> str:
    m = _LEVEL_RE.search(text[:200])
    if not m:
        return ""
    level = m.group(1).upper()
    return "WARN" if level == "WARNING" else level


def parse_event(
    raw: bytes, key: bytes | None, default_service: str, max_bytes: int, source: str | None = None
) -> Event:
    """One record of `events` to an Event; raises ParseError with the reason otherwise."""
    if len(raw) > max_bytes:
        raise ParseError(f"event of {len(raw)} bytes exceeds the maximum of {max_bytes}")
    if not raw.strip():
        raise ParseError("empty event")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"invalid UTF-8 at byte {exc.start}") from None
    key_service = decode_line(key) if key else None
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ParseError(
                f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        if not isinstance(obj, dict):
            raise ParseError(f"JSON {type(obj).__name__} where an object was expected")
        return _from_json(obj, key_service or default_service, source)
    line = text.rstrip("\r\n")
    return Event(
        ts=_parse_ts(line[:64]),
        service=key_service or default_service,
        level=_level_of(line),
        message=line,
        source=source,
    )


def _from_json(obj: dict[str, object], fallback_service: str, source: str | None) -> Event:
    message = _first(obj, _MESSAGE_KEYS)
    if isinstance(message, str) and message.lstrip().startswith("{"):
        try:  # container runtimes wrap the line: {"log": "...", "stream": ...}
            inner = json.loads(message)
            if isinstance(inner, dict) and isinstance(inner.get("log"), str):
                message = inner["log"]
        except json.JSONDecodeError:
            pass
    if message is None:
        raise ParseError("JSON object without a message field (message, msg, log, text)")
    message = str(message).rstrip("\n")
    service = _first(obj, _SERVICE_KEYS)
    service_s = _service_from_pod(str(service)) if service is not None else fallback_service
    level = _first(obj, _LEVEL_KEYS)
    level_s = str(level).upper() if level is not None else _level_of(message)
    used = set(
        _TS_KEYS
        + _SERVICE_KEYS
        + _HOST_KEYS
        + _LEVEL_KEYS
        + _MESSAGE_KEYS
        + _TRACE_KEYS
        + _SPAN_KEYS
    )
    attrs = {k: v if isinstance(v, str) else json.dumps(v) for k, v in obj.items() if k not in used}
    trace, span, host = _first(obj, _TRACE_KEYS), _first(obj, _SPAN_KEYS), _first(obj, _HOST_KEYS)
    try:
        return Event(
            ts=_parse_ts(_first(obj, _TS_KEYS)) or _parse_ts(message[:64]),
            service=service_s,
            host=str(host) if host is not None else None,
            level="WARN" if level_s == "WARNING" else level_s,
            message=message,
            trace_id=str(trace) if trace is not None else None,
            span_id=str(span) if span is not None else None,
            attributes=attrs,
            source=source,
        )
    except ValidationError as exc:
        raise ParseError(f"invalid event fields: {exc.errors()[0]['msg']}") from None
