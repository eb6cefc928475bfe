"""The repeat filter: a storm of identical log lines becomes one line per interval with a count."""

from __future__ import annotations

import logging

from sluice.stream.observe.logs import RepeatFilter


def _record(msg: str, level: int = logging.ERROR, name: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, ("127.0.0.1",), None)


def test_repeats_are_held_back_and_counted() -> None:
    now = [0.0]
    f = RepeatFilter(interval_s=10, clock=lambda: now[0])
    assert f.filter(_record("Unable connect to node %s"))
    passed = 0
    for _ in range(1000):
        now[0] += 0.005
        passed += f.filter(_record("Unable connect to node %s"))
    assert passed == 0
    now[0] = 11
    r = _record("Unable connect to node %s")
    assert f.filter(r) and "[1000 more like this in the last 11 s]" in r.getMessage()
    assert f.filter(_record("Unable to update metadata"))  # another kind passes at once
    assert f.filter(_record("Unable connect to node %s", name="kafka"))  # another logger too
    for _ in range(3):  # below WARNING nothing is held back
        assert f.filter(_record("heartbeat", logging.INFO))
