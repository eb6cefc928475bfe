"""Event times: epoch numbers (seconds, milliseconds, microseconds or nanoseconds) and ISO-8601
text, kept only within 1970..2262 (the range of nanosecond epochs): others are no time at all,
so that no window arithmetic downstream can overflow."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from sluice.stream.records import EARLIEST_EVENT_TIME, LATEST_EVENT_TIME

__all__ = ["MAX_CLOCK_SKEW_S", "any_ts", "epoch", "in_range", "parse_ts"]

_ISO_RE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
_FRACTION = re.compile(r"\d+")
#: Epoch values above this are taken as milliseconds, microseconds or nanoseconds.
_EPOCH_SECONDS_MAX = 1e11


def parse_ts(value: object) -> datetime | None:
    """A time in 1970..2262 from epoch numbers or ISO-8601 text; else None (never raises)."""
    ts = any_ts(value)
    return ts if ts is not None and EARLIEST_EVENT_TIME <= ts < LATEST_EVENT_TIME else None


def any_ts(value: object) -> datetime | None:
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):  # epoch seconds, millis, micros or nanos
            v = float(value)
            if not math.isfinite(v) or v < 0:
                return None
            for _ in range(3):  # bounded: a huge number is not a time, not a loop
                if v <= _EPOCH_SECONDS_MAX:
                    break
                v /= 1000
            return datetime.fromtimestamp(v, tz=UTC) if v <= _EPOCH_SECONDS_MAX else None
        if isinstance(value, str):
            m = _ISO_RE.search(value)
            if m:
                s = m.group(0).replace(",", ".").replace(" ", "T")
                if "." in s:  # Python parses at most microseconds
                    head, _, frac = s.partition(".")
                    digits = _FRACTION.match(frac)
                    n = digits.group(0) if digits else ""
                    s = f"{head}.{n[:6].ljust(6, '0')}{frac[len(n) :]}"
                dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
                return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):  # 2023-13-45, year 0, out of the platform's range
        return None
    return None


_DIGITS = re.compile(r"\d*")
#: An event time further than this from its batch's median is not used by the counters.
MAX_CLOCK_SKEW_S = 86_400.0


def epoch(value: object, seconds: dict[object, float | None]) -> float | None:
    """`parse_ts(value)` as epoch seconds, memoized per second: the events of a batch share a
    few seconds, so `2023-01-29T08:42:22.383150913Z` costs a dictionary lookup and the parse of
    its fraction (the zone stays in the key)."""
    if isinstance(value, str) and len(value) > 21 and value[19] == "." and value[4] == "-":
        if value[-1] == "Z" and value[20:-1].isdigit():  # the usual shape: no regex
            key: object = value[:19] + "Z"
            frac = float("0." + value[20:-1])
        else:
            end = _DIGITS.match(value, 20).end()  # type: ignore[union-attr]  # \d* matches
            key = value[:19] + value[end:]
            frac = float("0." + value[20:end]) if end > 20 else 0.0
    else:
        key, frac = value if isinstance(value, str | int | float) else None, 0.0
        if key is None:
            return None
    if key in seconds:
        base = seconds[key]
    else:
        t = parse_ts(key)
        base = seconds[key] = t.timestamp() if t is not None else None
    return None if base is None else base + frac


_FIRST_S, _LAST_S = EARLIEST_EVENT_TIME.timestamp(), LATEST_EVENT_TIME.timestamp()


def in_range(t: float | None) -> float | None:
    """Epoch seconds within 1970..2262, else None (a written year 9999 is no time at all)."""
    return t if t is not None and _FIRST_S <= t < _LAST_S else None
