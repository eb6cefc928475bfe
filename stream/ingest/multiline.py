"""Multi-line events: a stack trace's lines join the log line they continue.

A Python traceback, a Java exception with its `at ...` frames and `Caused by:`, a Go panic's
goroutine dump: each is one event that a file or a line-per-record shipper splits into many
records. Scored apart, every frame is an "event" of its own (`  File "api.py", line 88`), and the
exception that explains the error line above it is lost to it. `continuation_groups` finds the
records that continue the one before and joins them with a newline, over one fetched batch (the
worker) or one batch that `scan` never cuts inside an event (`ends_event`).

What continues an event, and only after a text line (never a JSON object or an OTLP request):
- an indented line (frames, source lines, wrapped text);
- `Traceback (most recent call last):`, `Caused by: ...`, `Suppressed: ...`, `... 12 more`,
  `The above exception was the direct cause...`, `During handling of the above exception...`;
- a qualified exception class opening a line (`java.lang.NullPointerException: ...`,
  `orders.payments.PaymentGatewayError: 504`), and a bare one (`ValueError: bad`) where the event
  already holds a traceback;
- a Go panic's `goroutine 1 [running]:`, `[signal ...]` and its frames (`main.main()`).

Records join only records of the same key. Bounded: an event holds at most `max_lines` records and
`max_bytes` bytes; the next record then starts an event of its own. A batch's last event is
complete at the batch's end (the worker does not hold records across batches: their offsets are
committed with the batch).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

__all__ = ["MAX_LINES", "continuation_groups", "ends_event"]

#: Records one event may join at most (a deep Java stack is 100-200 frames).
MAX_LINES = 200

#: Lines that continue whatever text line comes before them.
_ALWAYS = re.compile(
    rb"[ \t]+\S|Traceback \(most recent call last\):|Caused by: |Suppressed: |\.\.\. \d+ more"
    rb"|The above exception was|During handling of the above exception"
    rb"|(?:[A-Za-z_$][\w$]*\.)+[A-Za-z_$][\w$]*(?:Exception|Error|Throwable|Fault)\b(?::|$)"
    rb"|goroutine \d+ \[[^\]]*\]:$"
)
#: A bare exception class (`ValueError: bad`): only inside a traceback.
_BARE_EXCEPTION = re.compile(rb"[A-Z]\w*(?:Exception|Error|Exit|Interrupt|Warning)\b(?::|$)")
#: A Go panic's frame (`main.main()`, `net/http.(*conn).serve(0xc000)`) and signal line.
_GO_FRAME = re.compile(rb"(?:[\w.\-/]+\.)?[\w.()*\[\]]+\(.*\)$|\[signal ")
#: The first bytes a continuation can have: a blank, `...`, or a letter (`Caused by:`, an
#: exception class, `goroutine`, a Go frame).
_CONTINUATION_HEADS = frozenset(
    bytes([c]) for c in b" \t._$abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _opens_structured(value: bytes) -> bool:
    """A JSON object (or an OTLP request): a record of its own, never continued or continuing."""
    head = value[:1]
    if head in (b"{", b"\n") or not head:
        return True
    return head.isspace() and value.lstrip()[:1] == b"{"


def _may_continue(value: bytes) -> bool:
    """Whether `value` continues some text line (what `_continues` allows, without the event)."""
    return bool(_ALWAYS.match(value) or _BARE_EXCEPTION.match(value) or _GO_FRAME.match(value))


def _continues(value: bytes, event: list[bytes]) -> bool:
    """Whether `value` continues the text event whose records are `event`."""
    if _opens_structured(value):
        return False
    if _ALWAYS.match(value):
        return True
    if _BARE_EXCEPTION.match(value):
        return any(v.startswith(b"Traceback") for v in event)
    return bool(_GO_FRAME.match(value)) and (
        event[0].startswith(b"panic: ") or any(v.startswith(b"goroutine ") for v in event)
    )


def continuation_groups(
    values: Sequence[bytes],
    keys: Sequence[bytes | None],
    max_bytes: int,
    max_lines: int = MAX_LINES,
) -> tuple[list[int], list[bytes]] | None:
    """The batch's events where records continue one another: each event's first record index
    and its bytes (its records joined with a newline); None when no record continues another.
    A record joins only one with the same key (producers that share a partition interleave)."""
    if len(values) < 2:
        return None
    # the cheap pass: only a record whose first byte can open a continuation is looked at (a
    # regex over the whole batch cost 1-2 us an event; most lines open with a digit or `{`)
    if not any(
        v[:1] in _CONTINUATION_HEADS and _may_continue(v) for v in itertools.islice(values, 1, None)
    ):
        return None
    starts: list[int] = []
    joined: list[bytes] = []
    event: list[bytes] = []
    size = 0
    for i, value in enumerate(values):
        if (
            event
            and keys[i] == keys[starts[-1]]
            and len(event) < max_lines
            and size + 1 + len(value) <= max_bytes
            and not _opens_structured(event[0])
            and _continues(value, event)
        ):
            event.append(value)
            size += 1 + len(value)
            continue
        if event:
            joined.append(b"\n".join(event))
        starts.append(i)
        event, size = [value], len(value)
    joined.append(b"\n".join(event))
    if len(starts) == len(values):
        return None
    return starts, joined


def ends_event(previous: bytes, value: bytes) -> bool:
    """Whether a batch may end between `previous` and `value` (`scan` cuts batches there): not
    where `value` may continue a text line (erring towards a longer batch)."""
    if _opens_structured(previous) or _opens_structured(value):
        return True
    return not _may_continue(value)
