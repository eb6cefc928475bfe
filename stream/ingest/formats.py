"""The plain-text line formats Sluice knows, each one regular expression with named groups and a
way to read its time, and `grok` for the patterns users write (`pipeline.text.patterns`).

Why a small matcher of our own rather than a grok library: the patterns compile to one stdlib
`re` expression with the same named groups the built-in formats use, and the few dozen base
patterns people use fit in a table here; the grok packages on PyPI bring hundreds of patterns,
the `regex` module, and no notion of a line's time or service.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

from sluice.stream.errors import FormatError

__all__ = ["BUILTIN_FORMATS", "LineFormat", "TextHeader", "TimeKind", "grok", "normalize_level"]


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
    """`POST api/checkout 502 Bad Gateway`: the route without its leading slash and the status
    with its reason phrase, so that a template keeps both (templates mask paths and numbers)."""
    status = g.get("status") or ""
    path = (g.get("path") or "").split("?", 1)[0].lstrip("/") or "/"
    level = "ERROR" if status.startswith("5") else "WARN" if status.startswith("4") else "INFO"
    return f"{g.get('method')} {path} {status}{_PHRASES.get(status, '')}", level


#: HTTP reason phrases by status (` Bad Gateway`): words survive a template, numbers do not.
_PHRASES = {str(int(s)): f" {s.phrase}" for s in HTTPStatus}


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
    _f("syslog-iso", rf"^(?:<(?P<pri>\d{{1,3}})>)?(?P<ts>{_ISO}) (?!(?:{_LEVEL})\b)(?P<host>\S+) "
       rf"{_PROGRAM}: ?"
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
