"""Plain-text log lines: which format, and the time, service, host, level and pid in its header.

A JSON event names its fields; a text line carries them in a header whose shape depends on what
wrote it. Each built-in `LineFormat` is one regular expression with named groups (`ts`, `host`,
`service` or `logger`, `pid`, `level`, `body`, and attributes such as an access log's `status`)
and a way to read its time. `TextFormats` picks the format per source (a file in `scan`, the
topic in the worker; a record key only where the settings give it a pattern) from the first
lines it sees, the most specific one that matches nearly as many of them as the best, and from
then on tries only that one: a stream does not run every pattern on every line. A line the chosen
format does not match (one source that mixes formats: a server's syslog, nginx and application
lines in one file or topic) is read in its own format, found by the line's shape (its first
characters, digits and letters folded; the format last found for the shape is tried first), and
stays plain text where none matches. A pattern per source in the settings overrides detection: a
built-in format's name, or a grok-style pattern (`%{SYSLOGTIMESTAMP:ts} %{HOSTNAME:host}
%{GREEDYDATA:body}`) as Logstash, Vector and Fluent Bit write them.

The message an event keeps (what the filter scores and templates are made from) is the body
with the header's stable parts in front: `LEVEL service: body`. The time, host and pid are gone
from it, so the same line from another host, day or process is the same template.

Times without a year (syslog's `Jun 14 15:16:01`, logcat, klog) take the year of a reference
time (the record's timestamp in the worker, the file's modification time in `scan`), the year
before when that would put them more than a week in its future; times without a zone are read in
`pipeline.text.zone`.

The formats themselves, and `grok`, are in `ingest.formats`.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from sluice.stream.ingest.formats import (
    _BY_NAME,
    _SYSLOG_SEVERITY,
    BUILTIN_FORMATS,
    LineFormat,
    TextHeader,
    TimeKind,
    grok,
    normalize_level,
)

__all__ = [
    "TextFormats",
]


_FRACTION_TAIL = re.compile(r"[.,:](\d{3,9})$")
_INNER_FRACTION = re.compile(r"(\d{2}:\d{2}:\d{2})\.\d+")
#: A time further than this past the reference is last year's (syslog has no year).
_FUTURE_SLACK_S = timedelta(days=7).total_seconds()


#: A line read in its format: what `TextFormats.match` returns, kept per line of a batch.
Read = tuple[LineFormat, "re.Match[str]"]


_LOGFMT_PAIR = re.compile(r'([\w.-]+)=("(?:[^"\\]|\\.)*"|\S*)')
_LOGFMT_KEYS = {
    "ts": ("ts", "time", "timestamp", "t", "@timestamp"),
    "level": ("level", "lvl", "severity"),
    "body": ("msg", "message"),
    "service": ("service", "app", "component", "svc", "logger"),
    "host": ("host", "hostname"),
    "pid": ("pid",),
}


def _logger_service(logger: str) -> str:
    """A JVM or Python logger's class or module: `org.apache.hadoop.mapred.Task$Foo` -> Task."""
    return logger.rsplit(".", 1)[-1].split("$", 1)[0] or logger


def _prefix(fmt: LineFormat, g: Mapping[str, str | None]) -> tuple[str, str | None, str]:
    """The message's prefix (`LEVEL service: `), the service and the level from the groups."""
    level = normalize_level(g.get("level"))
    if not level and g.get("pri"):
        level = _SYSLOG_SEVERITY[int(g["pri"] or 0) & 7]
    service = g.get("service") or None
    if service == "-":
        service = None
    if service is None and g.get("logger"):
        service = _logger_service(g["logger"] or "")
    service = service or fmt.service
    prefix = " ".join(p for p in (level, f"{service}:" if service else "") if p)
    return (prefix + " " if prefix else ""), service, level


def _header(fmt: LineFormat, g: dict[str, str | None]) -> TextHeader:
    if fmt.name == "logfmt":
        pairs = {k: v[1:-1] if v.startswith('"') else v
                 for k, v in _LOGFMT_PAIR.findall(g["pairs"] or "")}  # fmt: skip
        picked = {f: next((pairs[k] for k in keys if pairs.get(k)), None)
                  for f, keys in _LOGFMT_KEYS.items()}  # fmt: skip
        used = {k for keys in _LOGFMT_KEYS.values() for k in keys}
        g = {**picked, "body": picked["body"] or ""}
        attrs = {k: v for k, v in pairs.items() if k not in used}
    else:
        attrs = {a: v for a in fmt.attributes if (v := g.get(a)) not in (None, "", "-")}
    if fmt.build is not None:
        body, built_level = fmt.build(g)
        g = {**g, "level": built_level}
    else:
        body = g.get("body") or ""
    prefix, service, level = _prefix(fmt, g)
    pid = g.get("pid")
    message = (prefix + body) if body else prefix.rstrip()
    return TextHeader(
        fmt.name, message, g.get("ts"), fmt.time if fmt.name != "logfmt" else "iso", service,
        g.get("host") if g.get("host") not in (None, "-") else None, level,
        pid if pid not in (None, "-") else None, attrs,
    )  # fmt: skip


class TextFormats:
    """Formats per source, detected from each source's first lines or set in the settings."""

    def __init__(
        self,
        patterns: Mapping[str, str] | None = None,
        *,
        zone: str = "UTC",
        probe_lines: int = 16,
        detect: bool = True,
        reference: float | None = None,
    ) -> None:
        self._forced = [
            (glob, _BY_NAME[p] if p in _BY_NAME else grok(glob, p))
            for glob, p in (patterns or {}).items()
        ]
        self._zone: tzinfo = UTC if zone.upper() == "UTC" else ZoneInfo(zone)
        self._probe = probe_lines
        self._detect = detect
        self.reference = reference  # epoch seconds: the year of times that have none
        self._chosen: dict[str, LineFormat | None] = {}
        self._tally: dict[str, Counter[str]] = {}
        self._seen: Counter[str] = Counter()
        self._times: dict[tuple[str, str, int], float | None] = {}
        self._prefixes: dict[tuple[str | None, ...], tuple[str, str | None, str]] = {}
        self._keyed: dict[str, bool] = {}
        self._shapes: dict[str, LineFormat | None] = {}  # a line's shape -> its format
        self._misses: Counter[str] = Counter()  # shapes not (yet) matched: lines of them
        self._pinned: set[str] = set()  # sources whose format the settings name (or none)
        self._year_of: tuple[float | None, int] = (-1.0, 0)
        #: the service of lines whose format names none and that have no key (`scan`: the file)
        self.fallback_service: str | None = None
        #: per source, the time of its last line that had one (`scan`: a line without inherits it)
        self.last_time: dict[str, float] = {}

    def format_of(self, source: str) -> LineFormat | None:
        """The format chosen for a source (None: undecided, or plain text)."""
        return self._chosen.get(source)

    def header(self, source: str, line: str) -> TextHeader | None:
        """The line's header in its source's format, or None for plain text."""
        read = self.match(source, line)
        return self.full(read) if read is not None else None

    def keyed(self, key: str) -> bool:
        """Whether a record key has a pattern of its own in the settings (then it is the line's
        source). Detection is per topic or file, never per key: keys are often many (a request,
        a pod), and a source is known only after its first lines."""
        if not self._forced:
            return False
        got = self._keyed.get(key)
        if got is None:
            if len(self._keyed) > 10_000:
                self._keyed.clear()
            got = self._keyed[key] = any(fnmatch.fnmatchcase(key, g) for g, _ in self._forced)
        return got

    def match(self, source: str, line: str) -> Read | None:
        """The hot path: the line matched in its source's format (one regex), else in the format
        of its shape (`_by_shape`), or None."""
        fmt = self._chosen.get(source, _UNDECIDED)
        if fmt is _UNDECIDED:
            fmt = self._decide(source, line)
            if fmt is _UNDECIDED:  # still probing: this line's own best format
                return self._first_match(line)
        if fmt is not None:
            m = fmt.regex.match(line)
            if m:
                return fmt, m
        return self._by_shape(source, line)

    def _by_shape(self, source: str, line: str) -> Read | None:
        """A line its source's format does not match, in the format a line of its shape was
        last read in; where that does not match, every format is tried (and the one found
        kept). A shape is taken for plain text only after `_PLAIN_AFTER` lines of it matched
        no format and none ever did (one odd line must not make its shape plain for good)."""
        if source in self._pinned:  # the settings named this source's format: that one only
            return None
        shape = line[:_SHAPE_CHARS].translate(_SHAPE_TABLE)
        fmt = self._shapes.get(shape, _UNDECIDED)
        if fmt is None:
            return None
        if fmt is not _UNDECIDED:
            m = fmt.regex.match(line)
            if m:
                return fmt, m
        found = self._first_match(line)
        if len(self._shapes) >= 10_000:
            self._shapes.clear()
            self._misses.clear()
        if found is not None:
            self._shapes[shape] = found[0]
        elif fmt is _UNDECIDED:
            self._misses[shape] += 1
            if self._misses[shape] >= _PLAIN_AFTER:
                self._shapes[shape] = None
                del self._misses[shape]
        return found

    def _first_match(self, line: str) -> Read | None:
        for fmt in BUILTIN_FORMATS:
            m = fmt.regex.match(line)
            if m:
                return fmt, m
        return None

    def full(self, read: Read) -> TextHeader:
        """Every field of a matched line (for the events that are forwarded)."""
        return _header(read[0], read[1].groupdict())

    @staticmethod
    def prefix(fmt: LineFormat, groups: Mapping[str, str | None]) -> tuple[str, str | None, str]:
        """The message's prefix (`LEVEL service: `), the service and the level, from a line's
        groups in `fmt` (for `ingest.columns`, which reads a batch's lines at once)."""
        return _prefix(fmt, groups)

    def batch_format(self, source: str) -> LineFormat | None:
        """The format a whole batch of `source`'s lines may be read in at once: chosen, its
        message a prefix and the body, and no pattern per record key in the settings."""
        fmt = self._chosen.get(source)
        return fmt if fmt is not None and fmt.fast and not self._forced else None

    def _prefix_of(self, read: Read) -> tuple[str, str | None, str]:
        fmt, m = read
        key = (fmt.name, *m.group(*fmt.keys)) if len(fmt.keys) > 1 else (
            fmt.name, m.group(fmt.keys[0]) if fmt.keys else None)  # fmt: skip
        got = self._prefixes.get(key)
        if got is None:
            if len(self._prefixes) > 50_000:
                self._prefixes.clear()
            got = self._prefixes[key] = _prefix(fmt, dict(zip(fmt.keys, key[1:], strict=False)))
        return got

    def read(self, source: str, line: str) -> tuple[Read | None, str]:
        """`match` and `message` in one call (the filter stage's hot path): the line matched in
        its source's format, and its message (the line itself where it does not match)."""
        fmt = self._chosen.get(source, _UNDECIDED)
        if fmt is not _UNDECIDED and fmt is not None and fmt.fast:  # the usual case: one regex,
            m = fmt.regex.match(line)  # one cached prefix
            if m is not None:
                return (fmt, m), self.message((fmt, m))
            found = self._by_shape(source, line)  # (not the source's format again)
            return found, self.message(found) if found is not None else line
        found = self.match(source, line)
        return found, self.message(found) if found is not None else line

    def message(self, read: Read) -> str:
        """The line's message (`LEVEL service: body`): a cached prefix and the body group."""
        fmt, m = read
        if not fmt.fast:
            return self.full(read).message
        prefix = self._prefix_of(read)[0]
        body = m.group("body")
        return prefix + body if body else prefix.rstrip()

    def service(self, read: Read) -> str | None:
        return self._prefix_of(read)[1] if read[0].fast else self.full(read).service

    def time_of(self, read: Read, reference: float | None) -> float | None:
        fmt, m = read
        if fmt.name == "logfmt":
            return self.time(self.full(read), reference)
        if fmt.time is None:
            return None
        return self._when(fmt.time, m.group("ts"), reference)

    def _decide(self, source: str, line: str) -> Any:
        """The source's format once its first lines are seen; `_UNDECIDED` before."""
        for glob, fmt in self._forced:
            if fnmatch.fnmatchcase(source, glob):
                self._chosen[source] = fmt
                self._pin(source)
                return fmt
        if not self._detect:
            self._chosen[source] = None
            self._pin(source)
            return None
        if source not in self._tally and len(self._tally) >= 1_000:  # bounded, as _chosen is
            oldest = next(iter(self._tally))
            del self._tally[oldest], self._seen[oldest]
        tally = self._tally.setdefault(source, Counter())
        for fmt in BUILTIN_FORMATS:
            if fmt.regex.match(line):
                tally[fmt.name] += 1
        self._seen[source] += 1
        n = self._seen[source]
        if n < self._probe:
            return _UNDECIDED
        # the most specific (earliest) format that matches nearly as many lines as the best
        most = max(tally.values(), default=0)
        best = next((f for f in BUILTIN_FORMATS if tally[f.name] >= 0.8 * most), None)
        chosen = best if best is not None and most * 2 >= n else None
        self._chosen[source] = chosen
        del self._tally[source], self._seen[source]
        if len(self._chosen) > 10_000:  # sources are keys: bounded, the oldest forgotten
            self._chosen.pop(next(iter(self._chosen)))
        return chosen

    def _pin(self, source: str) -> None:
        if len(self._pinned) >= 10_000:
            self._pinned.clear()
        self._pinned.add(source)

    def time(self, header: TextHeader, reference: float | None) -> float | None:
        """The header's time as epoch seconds (memoized per second of text), or None."""
        if header.ts_text is None or header.time is None:
            return None
        return self._when(header.time, header.ts_text, reference)

    def _when(self, kind: TimeKind, text: str | None, reference: float | None) -> float | None:
        if text is None:
            return None
        frac = 0.0
        if kind == "compact":  # 20171223-22:15:29:6 (milliseconds, not zero-padded)
            text, _, ms = text.rpartition(":")
            frac = int(ms) / 1000 if ms.isdigit() else 0.0
        elif m := _FRACTION_TAIL.search(text):
            text, frac = text[: m.start()], float("0." + m.group(1))
        ref = reference if reference is not None else self.reference
        if ref != self._year_of[0]:
            when = datetime.fromtimestamp(ref, UTC) if ref is not None else datetime.now(UTC)
            self._year_of = (ref, when.year)
        year = self._year_of[1]
        key = (kind, text, year)
        if key not in self._times:
            if len(self._times) > 100_000:
                self._times.clear()
            self._times[key] = self._read(kind, text, year, ref)
        base = self._times[key]
        return None if base is None else base + frac

    def _read(self, kind: TimeKind, text: str, year: int, ref: float | None) -> float | None:
        from sluice.stream.ingest.times import any_ts

        try:
            if kind == "epoch":
                return float(text)
            if kind == "iso":
                dt = any_ts(text)
                if dt is not None and not _ISO_HAS_ZONE.search(text):
                    dt = dt.replace(tzinfo=self._zone)
                return dt.timestamp() if dt is not None else None
            fmt, yearless = _STRPTIME[kind]
            if kind == "ctime":
                text = _INNER_FRACTION.sub(r"\1", text)
            if kind == "syslog":
                text = " ".join(text.split())
            dt = datetime.strptime(f"{year} {text}" if yearless else text, fmt)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=self._zone)
            if yearless and ref is not None and dt.timestamp() > ref + _FUTURE_SLACK_S:
                dt = dt.replace(year=year - 1)
            return dt.timestamp()
        except (ValueError, OverflowError, OSError):
            return None


_UNDECIDED: Any = object()
#: A line's shape: its first characters with digits as 0, letters as a or A (`_by_shape`).
_SHAPE_CHARS = 20
#: Lines of a shape that matched no format before the shape is taken for plain text.
_PLAIN_AFTER = 8
_SHAPE_TABLE = str.maketrans(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0" * 10 + "a" * 26 + "A" * 26,
)
_ISO_HAS_ZONE = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")
_STRPTIME: dict[str, tuple[str, bool]] = {
    "syslog": ("%Y %b %d %H:%M:%S", True),
    "yymmdd": ("%y%m%d %H%M%S", False),
    "yy/mm/dd": ("%y/%m/%d %H:%M:%S", False),
    "mm-dd": ("%Y %m-%d %H:%M:%S", True),
    "compact": ("%Y%m%d-%H:%M:%S", False),
    "mm.dd": ("%Y %m.%d %H:%M:%S", True),
    "ctime": ("%a %b %d %H:%M:%S %Y", False),
    "httpdate": ("%d/%b/%Y:%H:%M:%S %z", False),
    "slash": ("%Y/%m/%d %H:%M:%S", False),
    "klog": ("%Y %m%d %H:%M:%S", True),
}
