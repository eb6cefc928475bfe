"""Records that hold other records, or wrap one: an OTLP request holds many log records (spans,
metric points), a shipper's envelope wraps one line. `Unpacker` adds what they hold to a parsed
batch's columns, each item at the position of its record, a wrapped line read by the text
formats; binary that is not an OTLP request is told apart from text (`is_binary`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sluice.stream.errors import ParseError
from sluice.stream.ingest.otlp import LINE_KEY, Decoded, Signal, decoder

if TYPE_CHECKING:
    from sluice.stream.ingest.parsing import ParsedBatch
    from sluice.stream.ingest.textformats import Read, TextFormats

__all__ = ["Unpacker", "is_binary", "looks_like_otlp_logs"]

#: Bytes that text lines do not hold (C0 controls but tab, newline, carriage return, escape):
#: with them, a record that is not UTF-8 is binary. Protobuf has them in every length byte.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f]")
_SIGNAL_ITEM = {"traces": "spans", "metrics": "points"}


class Unpacker:
    """Adds the items of records that hold many (OTLP requests) or wrap one (envelopes) to a
    batch's columns, a wrapped line read by the text formats."""

    def __init__(
        self,
        out: ParsedBatch,
        max_bytes: int,
        formats: TextFormats | None,
        stream: str,
        scope_attribute: str | None,
    ) -> None:
        self.out, self.max_bytes, self.formats, self.stream = out, max_bytes, formats, stream
        self._scope = scope_attribute

    def otlp(self, i: int, raw: bytes | None, obj: Any, signal: Signal) -> None:
        """Record i, an OTLP request of `signal` (`raw` protobuf or JSON, or `obj` parsed)."""
        out = self.out
        out.otlp_records += 1
        dec = decoder(signal, self._scope)
        try:
            if obj is not None:
                got = Decoded()
                dec.decode_json(obj, got)
            else:
                got = dec.decode(raw or b"")
        except ParseError as exc:
            out.dead.append((i, f"OTLP {signal}: {exc}"))
            return
        out.dead += [(i, f"OTLP {signal} item: {reason}") for reason in got.dead]
        if signal != "logs":
            getattr(out, _SIGNAL_ITEM[signal]).extend(got.items)
            if signal == "traces":  # where each span came from: an exemplar's source
                out.span_records.extend([i] * len(got.items))
            return
        for n, item in enumerate(got.items):
            size = len(item["message"])
            if size > self.max_bytes:
                out.dead.append(
                    (i, f"event of {size} bytes exceeds the maximum of {self.max_bytes} "
                        f"(OTLP log record {n})"))  # fmt: skip
                continue
            self.out.item_of[len(self.out.messages)] = n
            self.item(i, item)

    def item(self, i: int, obj: dict[str, Any]) -> None:
        """One event object of record i; its line read by the formats when it is a raw one."""
        out = self.out
        message = obj["message"]
        header: Read | None = None
        src = ""
        if obj.get(LINE_KEY) and self.formats is not None:
            src = f"{self.stream}|{obj.get('container') or obj.get('service') or ''}"
            header, message = self.formats.read(src, message.rstrip("\r\n"))
        out.messages.append(message)
        out.objects.append(obj)
        out.index.append(i)
        if self.formats is not None:
            out.headers.append(header)
            out.sources.append(src)


def looks_like_otlp_logs(raw: bytes) -> bool:
    """An ExportLogsServiceRequest opens with field 1 (resource_logs), whose ResourceLogs holds
    a Resource (field 1) or ScopeLogs (field 2): `0a <len> 0a|12`. A text line starting with a
    newline and a control byte is not worth a protobuf parse."""
    i = 1
    while i < len(raw) and i < 6 and raw[i] & 0x80:  # the varint length
        i += 1
    return i + 1 < len(raw) and raw[i + 1 : i + 2] in (b"\n", b"\x12")


def is_binary(raw: bytes) -> bool:
    return _CONTROL.search(raw, 0, 4096) is not None
