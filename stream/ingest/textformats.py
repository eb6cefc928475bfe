"""Plain-text log lines: which format, and the time, service, host, level and pid in its header.

A JSON event names its fields; a text line carries them in a header whose shape depends on what
wrote it. Each built-in `LineFormat` is one regular expression with named groups (`ts`, `host`,
`service` or `logger`, `pid`, `level`, `body`, and attributes such as an access log's `status`)
and a way to read its time. `TextFormats` picks the format per source (a file in `scan`, the
topic in the worker; a record key only where the settings give it a pattern) from the first
lines it sees, the most specific one that matches nearly as many of them as the best, and from
then on tries only that one: a stream does not run every pattern on every line. A line
the chosen format does not match (a stack trace's continuation) stays plain text. A pattern per
source in the settings overrides detection: a built-in format's name, or a grok-style pattern
(`%{SYSLOGTIMESTAMP:ts} %{HOSTNAME:host} %{GREEDYDATA:body}`) as Logstash, Vector and Fluent Bit
write them.

The message an event keeps (what the filter scores and templates are made from) is the body
with the header's stable parts in front: `LEVEL service: body`. The time, host and pid are gone
from it, so the same line from another host, day or process is the same template.

Times without a year (syslog's `Jun 14 15:16:01`, logcat, klog) take the year of a reference
time (the record's timestamp in the worker, the file's modification time in `scan`), the year
before when that would put them more than a week in its future; times without a zone are read in
`pipeline.text.zone`.

Why a small matcher of our own rather than a grok library: the patterns compile to one stdlib
`re` expression with the same named groups the built-in formats use, and the few dozen base
patterns people use fit in a table here; the grok packages on PyPI bring hundreds of patterns,
the `regex` module, and no notion of a line's time or service.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sluice.stream.errors import FormatError

__all__ = [
    "BUILTIN_FORMATS",
    "LineFormat",
    "TextFormats",
    "TextHeader",
    "grok",
    "normalize_level",
]

TimeKind = Literal[
    "iso", "syslog", "epoch", "yymmdd", "yy/mm/dd", "mm-dd", "compact", "mm.dd", "ctime",
    "httpdate", "slash", "klog",
]  # fmt: skip

_LEVEL_NAMES = {
    "v": "TRACE", "verbose": "TRACE", "trace": "TRACE", "d": "DEBUG", "debug": "DEBUG",
    "i": "INFO", "info": "INFO", "information": "INFO", "notice": "NOTICE", "n": "NOTICE",
    "w": "WARN", "warn": "WARN", "warning": "WARN", "e": "ERROR", "err": "ERROR",
    "error": "ERROR", "severe": "ERROR", "f": "FATAL", "fatal": "FATAL", "a": "FATAL",
    "crit": "CRITICAL", "critical": "CRITICAL", "alert": "FATAL", "emerg": "FATAL",
    "panic": "FATAL", "log": "INFO", "statement": "INFO", "detail": "INFO", "hint": "INFO",
    "debug1": "DEBUG", "debug2": "DEBUG", "debug3": "DEBUG", "debug4": "DEBUG", "debug5": "DEBUG",
}  # fmt: skip
#: syslog severities (PRI & 7) as levels
_SYSLOG_SEVERITY = ("FATAL", "FATAL", "CRITICAL", "ERROR", "WARN", "NOTICE", "INFO", "DEBUG")
_FRACTION_TAIL = re.compile(r"[.,:](\d{3,9})$")
_INNER_FRACTION = re.compile(r"(\d{2}:\d{2}:\d{2})\.\d+")
#: A time further than this past the reference is last year's (syslog has no year).
_FUTURE_SLACK_S = timedelta(days=7).total_seconds()


def normalize_level(text: str | None) -> str:
    """ERROR, WARN, INFO, ... from a level as formats write it (`E`, `err`, `Warning`)."""
    if not text:
        return ""
    return _LEVEL_NAMES.get(text.strip().lower(), text.strip().upper())


@dataclass(frozen=True)
class LineFormat:
    """One header shape. `build` makes the body from the groups where the format has no body
    group of its own (an access log's request and status)."""

    name: str
    regex: re.Pattern[str]
    time: TimeKind | None = "iso"
    service: str | None = None  # a fixed service (nginx), where the line names none
    attributes: tuple[str, ...] = ()
    build: Callable[[dict[str, str | None]], tuple[str, str]] | None = None  # -> body, level
    #: the groups the message's prefix is made of (level and service), those the regex has
    keys: tuple[str, ...] = ()

    @property
    def fast(self) -> bool:
        """Whether the message is prefix + body group (cached per prefix), not built per line."""
        return self.build is None and self.name != "logfmt"


#: A line read in its format: what `TextFormats.match` returns, kept per line of a batch.
Read = tuple[LineFormat, "re.Match[str]"]


@dataclass
class TextHeader:
    """What a text line's header says; `message` is what the event keeps (see the module)."""

    format: str
    message: str
    ts_text: str | None
    time: TimeKind | None
    service: str | None
    host: str | None
    level: str
    pid: str | None
    attributes: dict[str, str] = field(default_factory=dict)


def _access(g: dict[str, str | None]) -> tuple[str, str]:
    status = g.get("status") or ""
    path = (g.get("path") or "").split("?", 1)[0]
    level = "ERROR" if status.startswith("5") else "WARN" if status.startswith("4") else "INFO"
    return f"{g.get('method')} {path} {status}", level


_ISO = r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
_LEVEL = r"TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|SEVERE|FATAL|CRITICAL"
#: syslog's program: `sshd[42]`, `sshd(pam_unix)[42]`, `sandboxd[129] ([31211])`, `syslogd 1.4.1`
_PROGRAM = (
    r"(?P<service>[^\s\[\]:(]+)(?:\((?P<facility>[^)\s]*)\))?(?:\[(?P<pid>\d+)\])?"
    r"(?: \([^)]*\)| [\d.]+)?"
)


_PREFIX_GROUPS = ("level", "pri", "service", "logger")


def _f(name: str, pattern: str, time: TimeKind | None = "iso", **kw: Any) -> LineFormat:
    regex = re.compile(pattern)
    keys = tuple(g for g in _PREFIX_GROUPS if g in regex.groupindex)
    return LineFormat(name, regex, time, keys=keys, **kw)


#: Built-in formats; on a tie in detection the earlier one wins.
BUILTIN_FORMATS: tuple[LineFormat, ...] = (
    _f("rfc5424", r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<service>\S+) (?P<pid>\S+) "
       r"(?P<msgid>\S+) (?:-|(?:\[(?:[^\]\\]|\\.)*\])+) ?(?P<body>.*)$", attributes=("msgid",)),
    _f("syslog", r"^(?:<(?P<pri>\d{1,3})>)?(?P<ts>[A-Z][a-z]{2} [ \d]?\d \d{2}:\d{2}:\d{2}) "
       rf"(?P<host>\S+) {_PROGRAM}: ?(?P<body>.*)$", "syslog"),
    _f("syslog-iso", rf"^(?:<(?P<pri>\d{{1,3}})>)?(?P<ts>{_ISO}) (?P<host>\S+) {_PROGRAM}: ?"
       r"(?P<body>.*)$"),
    _f("thunderbird", r"^(?:\S+ )?(?P<ts>\d{9,10}) \d{4}\.\d{2}\.\d{2} (?P<host>\S+) [A-Z][a-z]{2} "
       rf"+\d{{1,2}} \d{{2}}:\d{{2}}:\d{{2}} \S+ {_PROGRAM}: ?(?P<body>.*)$", "epoch"),
    _f("bgl", r"^(?:\S+ )?(?P<ts>\d{9,10}) \d{4}\.\d{2}\.\d{2} (?P<host>\S+) \S+ \S+ "
       r"(?P<facility>\w+) (?P<service>\w+) (?P<level>[A-Z]+) (?P<body>.*)$", "epoch"),
    _f("hpc", r"^\d+ (?P<host>\S+) (?P<service>[\w.]+) (?P<event>\S+) (?P<ts>\d{9,10}) -?\d "
       r"(?P<body>.*)$", "epoch", attributes=("event",)),
    _f("logcat", r"^(?P<ts>\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}) +(?P<pid>\d+) +(?P<tid>\d+) "
       r"(?P<level>[VDIWEFA]) (?P<service>[^:]*?) *: (?P<body>.*)$", "mm-dd"),
    _f("pipe", r"^(?P<ts>\d{8}-\d{1,2}:\d{1,2}:\d{1,2}:\d{1,3})\|(?P<service>[^|]+)\|"
       r"(?P<pid>\d+)\|(?P<body>.*)$", "compact"),
    _f("proxifier", r"^\[(?P<ts>\d{2}\.\d{2} \d{2}:\d{2}:\d{2})\] (?P<service>\S+)(?: \*\d+)? - "
       r"(?P<body>.*)$", "mm.dd"),
    _f("apache-error", r"^\[(?P<ts>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}(?:\.\d+)? "
       r"\d{4})\] \[(?:(?P<module>[\w-]+):)?(?P<level>\w+)\](?: \[pid (?P<pid>\d+)[^\]]*\])?"
       r"(?: \[client (?P<client>[^\]]+)\])? (?P<body>.*)$", "ctime", service="httpd",
       attributes=("module", "client")),
    _f("access", r'^(?P<client>\S+) \S+ (?P<user>\S+) \[(?P<ts>[^\]]+)\] "(?P<method>[A-Z]+) '
       r'(?P<path>\S+)(?: HTTP/[\d.]+)?" (?P<status>\d{3}) (?P<bytes>\d+|-)(?: "[^"]*" "'
       r'(?P<agent>[^"]*)")?.*$', "httpdate",
       attributes=("client", "method", "path", "status", "bytes"), build=_access),
    _f("nginx-error", r"^(?P<ts>\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}) \[(?P<level>\w+)\] "
       r"(?P<pid>\d+)#\d+: (?:\*\d+ )?(?P<body>.*)$", "slash", service="nginx"),
    _f("klog", r"^(?P<level>[IWEF])(?P<ts>\d{4} \d{2}:\d{2}:\d{2}\.\d{6}) +(?P<pid>\d+) "
       r"(?P<file>[\w.-]+:\d+)\] (?P<body>.*)$", "klog", attributes=("file",)),
    _f("log4j-zookeeper", rf"^(?P<ts>{_ISO}) - (?P<level>[A-Z]+) +\[(?P<thread>.*):"
       r"(?P<logger>[\w$]+)@\d+\] - (?P<body>.*)$"),
    _f("spring-boot", rf"^(?P<ts>{_ISO}) +(?P<level>[A-Z]+) (?P<pid>\d+) --- (?:\[[^\]]*\] )?"
       r"\[ *(?P<thread>[^\]]*)\] (?P<logger>[\w.$\[\]/-]+) +: (?P<body>.*)$"),
    _f("log4j", rf"^(?P<ts>{_ISO}) +\[?(?P<level>{_LEVEL})\]? +(?:\[(?P<thread>[^\]]*)\] +)?"
       r"(?P<logger>[\w.$-]+): (?P<body>.*)$"),
    _f("logback", rf"^(?P<ts>{_ISO}) \[(?P<thread>[^\]]*)\] (?P<level>[A-Z]+) +"
       r"(?P<logger>[\w.$]+) - (?P<body>.*)$"),
    _f("python", rf"^(?P<ts>{_ISO}) - (?P<logger>[\w.]+) - (?P<level>[A-Z]+) - (?P<body>.*)$"),
    _f("python-basic", r"^(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL):(?P<logger>[\w.]+):"
       r"(?P<body>.*)$", None),
    _f("postgres", r"^(?P<ts>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?)(?: [A-Z]{2,5})? "
       r"\[(?P<pid>\d+)\] (?P<level>[A-Z]+\d?): +(?P<body>.*)$", service="postgres"),
    _f("oslo", rf"^(?:(?P<service>[\w-]+)\.log\S* )?(?P<ts>{_ISO}) (?P<pid>\d+) "
       r"(?P<level>[A-Z]+) (?P<logger>[\w.]+) (?P<body>.*)$"),
    _f("spark", r"^(?P<ts>\d{2}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}) (?P<level>[A-Z]+) "
       r"(?P<logger>[\w.$]+): (?P<body>.*)$", "yy/mm/dd"),
    _f("hdfs", r"^(?P<ts>\d{6} \d{6}) (?P<pid>\d+) (?P<level>[A-Z]+) (?P<logger>[\w.$]+): "
       r"(?P<body>.*)$", "yymmdd"),
    _f("windows-cbs", r"^(?P<ts>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}), (?P<level>\w+) +"
       r"(?P<service>\w+) +(?P<body>.*)$"),
    _f("logfmt", r"^(?P<pairs>[\w.-]+=(?:\"(?:[^\"\\]|\\.)*\"|\S*)(?: +[\w.-]+=(?:\"(?:[^\"\\]|"
       r"\\.)*\"|\S*))+) *$", None),
    _f("iso-first", rf"^(?P<ts>{_ISO})[ ,|]+(?:\[?(?P<level>{_LEVEL})\]?[ :]+)?(?P<body>.*)$"),
    _f("go-log", r"^(?P<ts>\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?) (?P<body>.*)$", "slash"),
    _f("epoch-first", r"^(?P<ts>1\d{9})(?:\.\d+)? (?P<body>.*)$", "epoch"),
)  # fmt: skip
_BY_NAME = {f.name: f for f in BUILTIN_FORMATS}
_LOGFMT_PAIR = re.compile(r'([\w.-]+)=("(?:[^"\\]|\\.)*"|\S*)')
_LOGFMT_KEYS = {
    "ts": ("ts", "time", "timestamp", "t", "@timestamp"),
    "level": ("level", "lvl", "severity"),
    "body": ("msg", "message"),
    "service": ("service", "app", "component", "svc", "logger"),
    "host": ("host", "hostname"),
    "pid": ("pid",),
}

#: Grok's base patterns, those people use in log lines (Logstash's names).
_GROK: dict[str, str] = {
    "WORD": r"\b\w+\b", "NOTSPACE": r"\S+", "SPACE": r"\s*", "DATA": r".*?",
    "GREEDYDATA": r".*", "INT": r"[+-]?\d+", "POSINT": r"\b[1-9]\d*\b", "NONNEGINT": r"\b\d+\b",
    "NUMBER": r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", "BASE16NUM": r"(?:0[xX])?[0-9A-Fa-f]+",
    "IPV4": r"(?:\d{1,3}\.){3}\d{1,3}", "IPV6": r"[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+",
    "IP": r"(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+)",
    "HOSTNAME": r"\b[0-9A-Za-z][0-9A-Za-z_.-]*\b", "IPORHOST": r"[0-9A-Za-z_.:-]+",
    "USER": r"[\w.@-]+", "USERNAME": r"[\w.@-]+", "UUID": r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}"
    r"-[0-9A-Fa-f]{12}", "PROG": r"[\w._/%-]+", "PATH": r"(?:/[^\s]*)+",
    "URIPATHPARAM": r"/[^\s?]*(?:\?\S*)?", "QS": r'"(?:[^"\\]|\\.)*"',
    "QUOTEDSTRING": r'"(?:[^"\\]|\\.)*"', "LOGLEVEL": r"(?i:trace|debug|info|notice|warn(?:ing)?"
    r"|err(?:or)?|crit(?:ical)?|fatal|severe|emerg(?:ency)?|alert)",
    "TIMESTAMP_ISO8601": _ISO, "SYSLOGTIMESTAMP": r"[A-Z][a-z]{2} [ \d]?\d \d{2}:\d{2}:\d{2}",
    "HTTPDATE": r"\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}",
    "SYSLOGPROG": r"[\w._/%-]+(?:\[\d+\])?", "SYSLOGHOST": r"[0-9A-Za-z_.:-]+",
}  # fmt: skip
_GROK_REF = re.compile(r"%\{(\w+)(?::(\w+))?\}")
#: The grok field names that mean a time, and how to read them.
_GROK_TIME: dict[str, TimeKind] = {
    "TIMESTAMP_ISO8601": "iso", "SYSLOGTIMESTAMP": "syslog", "HTTPDATE": "httpdate",
}  # fmt: skip


def grok(name: str, pattern: str) -> LineFormat:
    """A LineFormat from a grok-style pattern; `%{NAME:field}` captures as `field` (ts, host,
    service or logger, pid, level, body; any other field becomes an attribute)."""
    kinds: list[TimeKind] = []
    fields: list[str] = []

    def expand(m: re.Match[str]) -> str:
        base, as_name = m.group(1), m.group(2)
        if base not in _GROK:
            raise FormatError(f"pattern {name!r}: unknown grok pattern %{{{base}}}")
        if as_name is None:
            return f"(?:{_GROK[base]})"
        if as_name == "ts":
            kinds.append(_GROK_TIME.get(base, "iso"))
        fields.append(as_name)
        return f"(?P<{as_name}>{_GROK[base]})"

    try:
        regex = re.compile("^" + _GROK_REF.sub(expand, pattern) + "$")
    except re.error as exc:
        raise FormatError(f"pattern {name!r}: {exc}") from None
    if "body" not in fields:
        raise FormatError(f"pattern {name!r} has no %{{...:body}} field")
    known = {"ts", "host", "service", "logger", "pid", "level", "body"}
    attributes = tuple(f for f in fields if f not in known)
    keys = tuple(g for g in _PREFIX_GROUPS if g in regex.groupindex)
    return LineFormat(name, regex, kinds[0] if kinds else None, attributes=attributes, keys=keys)


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
        """The hot path: the line matched in its source's format (one regex), or None."""
        fmt = self._chosen.get(source, _UNDECIDED)
        if fmt is _UNDECIDED:
            fmt = self._decide(source, line)
            if fmt is _UNDECIDED:  # still probing: this line's own best format
                return self._first_match(line)
        if fmt is None:
            return None
        m = fmt.regex.match(line)
        return (fmt, m) if m else None

    def _first_match(self, line: str) -> Read | None:
        for fmt in BUILTIN_FORMATS:
            m = fmt.regex.match(line)
            if m:
                return fmt, m
        return None

    def full(self, read: Read) -> TextHeader:
        """Every field of a matched line (for the events that are forwarded)."""
        return _header(read[0], read[1].groupdict())

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
        if fmt is None:
            return None, line
        if fmt is not _UNDECIDED and fmt.fast:  # the usual case: one regex, one cached prefix
            m = fmt.regex.match(line)
            if m is None:
                return None, line
            return (fmt, m), self.message((fmt, m))
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
                return fmt
        if not self._detect:
            self._chosen[source] = None
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
        from sluice.stream.ingest.parsing import _any_ts

        try:
            if kind == "epoch":
                return float(text)
            if kind == "iso":
                dt = _any_ts(text)
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
