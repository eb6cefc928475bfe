"""Hostile input: every record ends as an event or a dead letter with its reason, in bounded time.

Two halves. The checked-in corpus (tests/corpus/) is replayed through every path that reads events:
`parse_event`, the filter stage's batch screening, `scan` in-process and the `sluice scan` command
(the worker replays it in tests/test_pipeline_kafka.py). Then Hypothesis fuzzes the same paths with
arbitrary JSON values (every number Python's json writes, non-finite ones and integers beyond 64
bits included; dates out of every range; deep nesting; any field with any type) and arbitrary
bytes, each example under a deadline, so a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.models.analyst import HeuristicAnalyst
from sluice.models.filter import KeywordFilter
from sluice.stream import PipelineSettings
from sluice.stream.errors import ParseError
from sluice.stream.filtering.screen import screen_batch
from sluice.stream.ingest.parsing import parse_batch, parse_event
from sluice.stream.records import DeadLetter, Event, SuspectBatch, parse_suspects_record
from sluice.stream.scan import scan
from tests.support.hostile import Hostile, check_event, corpus

CORPUS = corpus()
CFG = PipelineSettings()  # max_event_bytes 64 KiB: the 1 MB line is a dead letter
EVERYTHING = KeywordFilter([""])  # flags every event: each is built, serialized and forwarded
#: Per example: far above the few milliseconds one takes, far below a hang.
DEADLINE = timedelta(seconds=10)


def _ts(e: Event) -> str | None:
    return e.ts.isoformat() if e.ts else None


@pytest.mark.parametrize("h", CORPUS, ids=lambda h: h.name)
def test_corpus_through_parse_event(h: Hostile) -> None:
    if h.dead:
        with pytest.raises(ParseError, match=h.expect["reason"]):
            parse_event(h.raw, None, "svc", CFG.max_event_bytes)
        return
    e = parse_event(h.raw, None, "svc", CFG.max_event_bytes)
    check_event(h, e.message, e.service, _ts(e))
    assert Event.model_validate_json(e.to_bytes()) == e


def _screen(values: list[bytes]) -> tuple[dict[int, Event], dict[int, DeadLetter]]:
    out = screen_batch(values, [None] * len(values), lambda i: ("events", 0, i), EVERYTHING, CFG)
    forwarded: dict[int, Event] = {}
    for messages in out.messages.values():
        for m in messages:
            rec = parse_suspects_record(m)
            assert isinstance(rec, SuspectBatch)
            for s in rec.suspects:
                assert s.event.source is not None
                forwarded[int(s.event.source.rsplit(":", 1)[1])] = s.event
    dead = {d.offset: d for d in out.dead if d.offset is not None}
    assert len(dead) == len(out.dead)
    return forwarded, dead


def test_corpus_in_one_batch_accounts_for_every_record() -> None:
    """The worker's path: one batch holding every hostile record; each is forwarded or dead."""
    forwarded, dead = _screen([h.raw for h in CORPUS])
    assert set(forwarded) | set(dead) == set(range(len(CORPUS)))
    assert not set(forwarded) & set(dead)
    for i, h in enumerate(CORPUS):
        if h.dead:
            assert i in dead and h.expect["reason"] in dead[i].reason, (h.name, dead.get(i))
            assert dead[i].size == len(h.raw)
        else:
            assert i in forwarded, (h.name, dead.get(i))
            e = forwarded[i]
            check_event(h, e.message, e.service, _ts(e))


def test_corpus_through_scan() -> None:
    records = [(h.raw, None, f"corpus:{i}") for i, h in enumerate(CORPUS)]
    result = asyncio.run(
        asyncio.wait_for(
            scan(records, CFG, EVERYTHING, HeuristicAnalyst(), lambda: datetime.now(UTC)), 60
        )
    )
    dead_at = {d.topic: d.reason for d in result.deadletters}
    expected = {f"corpus:{i}": h.expect["reason"] for i, h in enumerate(CORPUS) if h.dead}
    assert set(dead_at) == set(expected)
    assert all(expected[k] in dead_at[k] for k in expected)
    assert result.events == len(CORPUS) - len(expected)
    assert result.windows >= 1 and result.feedback  # analysed, not just parsed


def test_corpus_through_the_scan_command(tmp_path: Path) -> None:
    """`sluice scan` on a file of the hostile lines: exit 0, no traceback, dead letters written;
    a blank line of a file is layout, skipped and counted (an empty record on a topic is not)."""
    lines = [h for h in CORPUS if b"\n" not in h.raw and b"\r" not in h.raw]
    path = tmp_path / "hostile.log"
    path.write_bytes(b"\n".join(h.raw for h in lines) + b"\n")
    dead_path = tmp_path / "dead.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "sluice.stream", "scan", str(path), "--deadletter", str(dead_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    letters = [DeadLetter.model_validate_json(x) for x in dead_path.read_text().splitlines()]
    blank = {n for n, h in enumerate(lines, start=1) if not h.raw.strip()}
    assert blank
    want = {f"hostile.log:{n}": h for n, h in enumerate(lines, start=1)
            if h.dead and n not in blank}  # fmt: skip
    assert {d.topic: d.reason for d in letters}.keys() == want.keys()
    assert all(want[d.topic].expect["reason"] in d.reason for d in letters)
    assert f"scanned {len(lines) - len(want) - len(blank)} events" in proc.stderr
    assert f"{len(blank)} blank lines skipped" in proc.stderr


# -- fuzzing ------------------------------------------------------------------------------------

_numbers = (
    st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**19, 1e308, 5e-324, 253402300800, -1e18])
)
_edges = st.datetimes(min_value=datetime(9999, 12, 31, 23, 58)) | st.datetimes(
    max_value=datetime(1, 1, 1, 0, 2)
)
_dates = (st.datetimes() | _edges).map(datetime.isoformat) | st.sampled_from(
    [
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59.999999999-23:59",
        "0001-01-01T00:00:00+14:00",
        "0000-01-01T00:00:00",
        "10000-01-01T00:00:00Z",
        "2023-13-45T25:61:61Z",
        "2023-02-30 00:00:00,123456789",
        "2262-04-11T23:47:16.854775807Z",
    ]
)
_leaves = st.none() | st.booleans() | _numbers | st.text(max_size=40) | _dates
_date_texts = st.tuples(_dates, st.text(max_size=20)).map(" ".join)  # a time heading a text line
_json_values = st.recursive(
    _leaves,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=12,
)
_FIELDS = [
    "ts", "timestamp", "@timestamp", "time", "Timestamp", "service", "app", "PodName", "level",
    "severity", "message", "msg", "log", "text", "trace_id", "span_id", "host", "scope",
]  # fmt: skip
_objects = st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=6), _json_values, max_size=8)
_nested = st.integers(min_value=1, max_value=3000).map(
    lambda n: '{"message": "ERROR deep", "a": ' + "[" * n + "]" * n + "}"
)
_json_lines = _objects.map(json.dumps) | _nested
#: Text lines, some that look like JSON: `{` or `[` in front of anything.
_text_lines = st.tuples(
    st.sampled_from(["", "{", "[", " {", "\ufeff", "[error] "]), st.text() | _date_texts
).map("".join)
_records = (
    _json_lines.map(str.encode)
    | _text_lines.map(lambda s: s.encode("utf-8", "surrogatepass"))
    | st.binary(max_size=200)
)
_fuzz = settings(max_examples=300, deadline=DEADLINE, suppress_health_check=[HealthCheck.too_slow])


@_fuzz
@given(_records)
def test_parse_event_gives_an_event_or_a_parse_error(raw: bytes) -> None:
    try:
        e = parse_event(raw, None, "svc", 1 << 20)
    except ParseError as exc:
        assert str(exc)
    else:
        assert Event.model_validate_json(e.to_bytes()) == e
        assert e.ts is None or datetime(1970, 1, 1, tzinfo=UTC) <= e.ts


@_fuzz
@given(st.lists(_records, min_size=1, max_size=8))
def test_batch_parse_accounts_for_every_record(values: list[bytes]) -> None:
    parsed = parse_batch(values, 1 << 20)
    assert sorted(parsed.index + [i for i, _ in parsed.dead]) == list(range(len(values)))
    assert len(parsed.messages) == len(parsed.index) == len(parsed.objects)


@_fuzz
@given(st.lists(_records, min_size=1, max_size=8), st.lists(st.binary(max_size=20) | st.none()))
def test_screening_forwards_or_dead_letters_every_record(
    values: list[bytes], keys: list[bytes | None]
) -> None:
    keys = (keys + [None] * len(values))[: len(values)]
    out = screen_batch(values, keys, lambda i: ("events", 0, i), EVERYTHING, CFG)
    forwarded = [
        s
        for ms in out.messages.values()
        for m in ms
        for s in parse_suspects_record(m).suspects  # type: ignore[union-attr]
    ]
    assert len(forwarded) + len(out.dead) + out.joined == len(values)  # a trace's lines: one
    assert out.events == len(values) - out.joined - sum(
        1 for d in out.dead if "unusable" not in d.reason
    )
    assert all(math.isfinite(s.score) for s in forwarded)


@settings(max_examples=150, deadline=DEADLINE, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_records, min_size=1, max_size=6))
def test_scan_ends_every_record_in_bounded_time(values: list[bytes]) -> None:
    """Through windows and analysis too: year 9999 plus a window overflowed here once."""
    records = [(v, None, f"fuzz:{i}") for i, v in enumerate(values)]
    result = asyncio.run(
        scan(records, CFG, EVERYTHING, HeuristicAnalyst(), lambda: datetime.now(UTC))
    )
    assert result.events + len({d.topic for d in result.deadletters}) >= len(values)
    assert result.suspects == result.events
