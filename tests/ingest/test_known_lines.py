"""A batch of lines in their source's known format, read in one tight loop, is read as the
general loop reads it: the same messages, dead letters and events, line for line, on every
loghub system and on hostile lines among HDFS lines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.stream.ingest import parsing
from sluice.stream.ingest.parsing import ParsedBatch, parse_batch
from sluice.stream.ingest.textformats import TextFormats
from tests.ingest.test_textformats import EXPECTED, REF, lines_of

MAX = 4096
HDFS = [
    b"081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block "
    b"blk_38865049064139660 terminating",
    b"081109 204005 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap "
    b"updated: 10.251.73.220:50010 is added to blk_7128370237687728475 size 67108864",
    b"081109 204106 329 WARN dfs.DataNode$DataXceiver: 10.251.106.10:50010:Got exception while "
    b"serving blk_-5295022547315567346 to /10.251.106.10:",
    b"081110 092314 2 ERROR dfs.DataNode: Disk out of space",
]


def _both(values: list[bytes], source: str, probe: list[bytes]) -> list[ParsedBatch]:
    """The batch parsed by the general loop alone, then with the tight one, each by formats
    that saw the same first lines."""
    out = []
    for tight in (False, True):
        text = TextFormats(reference=REF)
        parse_batch(probe, MAX, text, stream=source)  # the source's format is chosen
        if not tight:
            text.batch_format = lambda _source: None  # type: ignore[method-assign]
        parsed = parse_batch(values, MAX, text, stream=source)
        parsed.record_times = [REF] * len(values)  # as the worker gives them
        out.append(parsed)
    return out


def _same(a: ParsedBatch, b: ParsedBatch) -> None:
    assert (b.messages, b.index, b.dead, b.sources) == (a.messages, a.index, a.dead, a.sources)
    assert b.text_times(b.record_times) == a.text_times(a.record_times)
    for j in range(len(a.messages)):
        assert b.event(j, None, "svc") == a.event(j, None, "svc"), a.messages[j]


@pytest.mark.parametrize("system", sorted(EXPECTED))
def test_every_loghub_system_reads_the_same_in_the_tight_loop(system: str) -> None:
    values = lines_of(system)
    general, tight = _both(values, system, values[:16])
    _same(general, tight)
    text = TextFormats(reference=REF)
    parse_batch(values[:16], MAX, text, stream=system)
    fmt = text.batch_format(system)
    assert fmt is not None
    read = sum(r is not None for r in parsing._read_known(values, fmt, text, MAX))
    assert read >= 0.95 * len(values), f"{read} of {len(values)} in the tight loop"


_ODD = st.sampled_from([
    b"", b"   ", b"{\"message\": \"ERROR x\"}", b"\xef\xbb\xbf" + HDFS[0], b" " + HDFS[1],
    HDFS[2] + b"\r", HDFS[3] + b"\n  at Foo.bar(Foo.java:1)", b"\xff\xfe binary \x00",
    b"2024-01-01T00:00:00.000000000Z stdout F " + HDFS[0], HDFS[0].replace(b"INFO", b"IN\x1fFO"),
    "081109 203615 148 INFO dfs.DataNode: caf\u00e9 \u0663 done".encode(),
    "081109 203615 148 INF\u00c9 dfs.Data\u00f1ode: x".encode(),
    b"081109 203615 148 INFO dfs.DataNode: " + b"x" * MAX, b"[Sun Dec 04 04:47:44 2005] [error] x",
    b"081109 203615 148 INFO dfs.DataNode: ", b"not a header at all",
])  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(HDFS), _ODD, st.binary(max_size=80)), max_size=300))
def test_hostile_lines_among_hdfs_lines_read_the_same_in_the_tight_loop(
    values: list[bytes],
) -> None:
    general, tight = _both(values, "hdfs-topic", HDFS * 4)
    _same(general, tight)
