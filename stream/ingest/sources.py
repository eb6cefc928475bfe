"""Reading log files for `scan` and `produce`: one record per line, or rows of a Nezha CSV."""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

__all__ = ["Format", "ReadStats", "Record", "read_records"]

Format = Literal["auto", "lines", "nezha"]
Record = tuple[bytes, bytes | None, str]  # value, key, source (file:line)
_NEZHA_HEADER = "Timestamp,TimeUnixNano,Node,PodName"


def _open(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by the caller's loop
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


@dataclass
class ReadStats:
    """What reading a file left out: blank lines (layout, not events; an empty *record* on a
    topic is still a dead letter, a producer's bug)."""

    blank: int = 0


def read_records(
    path: str, fmt: Format = "auto", stats: ReadStats | None = None
) -> Iterator[Record]:
    """Records of a file ('-' = stdin), blank lines left out (counted in `stats`). Bytes stay
    bytes: bad UTF-8 is the parser's to report."""
    if stats is None:
        stats = ReadStats()
    fh = _open(path)
    try:
        name = "stdin" if path == "-" else Path(path).name
        if fmt == "auto":
            head = fh.peek(64)[:64] if hasattr(fh, "peek") else b""
            fmt = "nezha" if head.startswith(_NEZHA_HEADER.encode()) else "lines"
        if fmt == "nezha":
            yield from _nezha(fh, name)
            return
        for n, line in enumerate(fh, start=1):
            if line.isspace() or not line:
                stats.blank += 1
                continue
            yield line.rstrip(b"\r\n"), None, f"{name}:{n}"
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def _nezha(fh: IO[bytes], name: str) -> Iterator[Record]:
    """Each CSV row as a JSON event; a malformed row is passed on as-is, to be dead-lettered."""
    text = io.TextIOWrapper(fh, encoding="utf-8", errors="replace", newline="")
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        return
    for row in reader:
        n = reader.line_num
        if len(row) != len(header):
            yield ",".join(row).encode(), None, f"{name}:{n}"
            continue
        r = dict(zip(header, row, strict=True))
        event = {
            "ts": r["Timestamp"],
            "service": r["PodName"],
            "host": r["Node"],
            "trace_id": r["TraceID"] or None,
            "span_id": r["SpanID"] or None,
            "log": r["Log"],
        }
        yield json.dumps(event).encode(), r["PodName"].encode(), f"{name}:{n}"
