"""Records the stream dropped while resuming (Faust clears its buffers on resume) are read again:
a record past a gap rewinds the partition to the gap, and the records after it wait."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sluice.stream.analysis import app as analysis_app


class _Consumer:
    def __init__(self) -> None:
        self.seeks: list[dict[Any, int]] = []

    async def seek_wait(self, partitions: dict[Any, int]) -> None:
        self.seeks.append(dict(partitions))


class _Signal:
    def __init__(self) -> None:
        self.receivers: list[Any] = []

    def connect(self, fun: Any) -> Any:
        self.receivers.append(fun)
        return fun


class _App:
    def __init__(self) -> None:
        self.consumer = _Consumer()
        self.on_partitions_revoked = _Signal()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(analysis_app.time, "monotonic", lambda: now[0])
    return now


def _gaps(app: _App, first: dict[int, int] | None = None) -> Any:
    """Gaps over `app`, a partition's first expected offset from `first` (0 when absent)."""

    async def expected(_topic: str, partition: int) -> int:
        return (first or {}).get(partition, 0)

    return analysis_app._Gaps(app, expected)  # type: ignore[arg-type]


def _run(gaps: Any, offsets: list[int], partition: int = 0) -> list[bool]:
    return [asyncio.run(gaps.in_order("suspects", partition, o)) for o in offsets]


def test_a_gap_rewinds_to_it_and_the_records_after_it_wait(clock: list[float]) -> None:
    app = _App()
    gaps = _gaps(app)
    assert _run(gaps, [0, 1]) == [True, True]
    assert _run(gaps, [3, 4]) == [False, False]  # 2 was dropped: read again from 2
    assert [o for s in app.consumer.seeks for o in s.values()] == [2]
    assert _run(gaps, [2, 3, 4]) == [True, True, True]  # in order again
    assert _run(gaps, [3]) == [True]  # a record read again (a seek, a rebalance) is not a gap


def test_what_ran_past_the_seek_seeks_again_and_a_gone_gap_is_given_up(clock: list[float]) -> None:
    app = _App()
    gaps = _gaps(app)
    _run(gaps, [0, 5])
    clock[0] += analysis_app._Gaps.SEEK_AGAIN_S
    assert _run(gaps, [6]) == [False]
    assert len(app.consumer.seeks) == 2  # in-flight records ran past the first seek
    clock[0] += analysis_app._Gaps.GIVE_UP_S
    assert _run(gaps, [7, 8]) == [True, True]  # 1-6 are no longer in the topic: on


def test_a_revoked_partition_is_forgotten(clock: list[float]) -> None:
    app = _App()
    gaps = _gaps(app, {3: 40})
    _run(gaps, [40, 41], partition=3)
    (forget,) = app.on_partitions_revoked.receivers
    asyncio.run(forget(app, {analysis_app.TP("suspects", 3)}))
    assert _run(gaps, [38], partition=3) == [True]  # a replay: what its last owner committed
    assert app.consumer.seeks == []


def test_a_partitions_first_records_dropped_at_a_resume_are_read_again(clock: list[float]) -> None:
    """The first record after an assignment is past the one after the state's last applied
    (or the topic's earliest): the stream dropped the records before it; read from there."""
    app = _App()
    gaps = _gaps(app, {5: 0, 4: 161})
    assert _run(gaps, [3, 4], partition=5) == [False, False]
    assert _run(gaps, [170], partition=4) == [False]
    assert [o for s in app.consumer.seeks for o in s.values()] == [0, 161]
    assert _run(gaps, [0, 1, 2, 3], partition=5) == [True] * 4
    assert _run(gaps, [161, 162], partition=4) == [True, True]
