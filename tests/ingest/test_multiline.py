"""Multi-line events: a stack trace's lines join the line they continue (`ingest.multiline`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sluice.stream.ingest.multiline import continuation_groups, ends_event

PYTHON = [
    b"2026-12-03 09:14:09,301 ERROR orders.api: checkout failed for order 1845",
    b"Traceback (most recent call last):",
    b'  File "/srv/orders/api.py", line 88, in checkout',
    b"    charge = payments.charge(order.total, order.card)",
    b"ValueError: card expired",
]
JAVA = [
    b"2026-12-03 09:14:12.448 ERROR 31 --- [nio-8081-exec-4] c.e.s.PaymentController : failed",
    b'java.lang.NullPointerException: Cannot invoke "Card.number()" because "card" is null',
    b"\tat com.example.shop.PaymentController.charge(PaymentController.java:57)",
    b"Caused by: java.net.SocketTimeoutException: Read timed out",
    b"\t... 12 more",
]
GO = [
    b"panic: runtime error: index out of range [5] with length 3",
    b"goroutine 1 [running]:",
    b"main.main()",
    b"\t/tmp/sandbox/prog.go:8 +0x1d",
]
NEXT = b"2026-12-03 09:14:13,000 INFO orders.api: GET /api/orders/1 served in 3 ms"


def _groups(values: list[bytes], keys: list[bytes | None] | None = None) -> list[bytes]:
    got = continuation_groups(values, keys or [None] * len(values), 1 << 20)
    return values if got is None else got[1]


def test_python_java_and_go_traces_are_one_event_each() -> None:
    out = _groups([*PYTHON, NEXT, *JAVA, *GO, NEXT])
    assert out == [b"\n".join(PYTHON), NEXT, b"\n".join(JAVA), b"\n".join(GO), NEXT]


def test_where_each_event_starts_is_its_first_records() -> None:
    got = continuation_groups([*PYTHON, NEXT], [None] * 6, 1 << 20)
    assert got is not None and got[0] == [0, 5]


def test_a_bare_exception_line_joins_only_a_traceback() -> None:
    assert _groups([NEXT, b"ValueError: card expired"]) == [NEXT, b"ValueError: card expired"]
    assert len(_groups(PYTHON)) == 1


def test_json_lines_are_never_joined_nor_continued() -> None:
    event = b'{"msg": "boom", "level": "error"}'
    assert _groups([event, b"  at x.y(Z.java:1)"]) == [event, b"  at x.y(Z.java:1)"]
    assert _groups([NEXT, b'  {"msg": "indented JSON"}']) == [NEXT, b'  {"msg": "indented JSON"}']


def test_records_of_other_keys_do_not_join() -> None:
    frame = b"\tat com.example.Foo.bar(Foo.java:1)"
    assert _groups([NEXT, frame], [b"pod-a", b"pod-b"]) == [NEXT, frame]
    assert _groups([NEXT, frame], [b"pod-a", b"pod-a"]) == [NEXT + b"\n" + frame]


def test_an_event_is_bounded_in_lines_and_bytes() -> None:
    frames = [b"\tat f%d(X.java:1)" % i for i in range(500)]
    got = continuation_groups([JAVA[0], *frames], [None] * 501, 1 << 20, max_lines=200)
    assert got is not None and [len(v.split(b"\n")) for v in got[1]] == [200, 200, 101]
    got = continuation_groups([JAVA[0], *frames], [None] * 501, 1000)
    assert got is not None and all(len(v) <= 1000 for v in got[1])


def test_a_scan_batch_ends_only_between_events() -> None:
    assert not ends_event(PYTHON[0], PYTHON[1]) and not ends_event(JAVA[1], JAVA[2])
    assert ends_event(PYTHON[-1], NEXT) and ends_event(b'{"a": 1}', b"  b")


_odd = [b"", b" ", b"{}", b"\x00", b"  x"]
_lines = st.sampled_from([*PYTHON, *JAVA, *GO, NEXT, *_odd]) | st.binary(max_size=30)


@given(st.lists(_lines, max_size=40), st.integers(1, 5))
def test_every_record_is_in_exactly_one_event_in_order(values: list[bytes], max_lines: int) -> None:
    got = continuation_groups(values, [None] * len(values), 1 << 20, max_lines)
    if got is None:
        return
    starts, joined = got
    assert starts[0] == 0 and starts == sorted(set(starts)) and len(starts) == len(joined)
    bounds = [*starts, len(values)]
    for k, event in enumerate(joined):
        assert event == b"\n".join(values[bounds[k] : bounds[k + 1]])
        assert bounds[k + 1] - bounds[k] <= max_lines
