"""The garbage collector's pace for a streaming process.

The filter stage makes a few container objects per event (a regex match, a tuple, a dict for a
JSON record), nearly all freed by reference counting, never part of a cycle. CPython's default
(a young collection every 700 allocations, older ones every 10 of those) spent about a third of
the time of reading HDFS text lines (`TextFormats.read`: 4.7 µs a line, 2.7 with the collector
off; `screen_batch` in-process 90-103k events/s, 118-140k with this, measured). So a process
that streams: freezes what it built at start (modules, settings, models: never collected, never
scanned again) and collects the young generation every 50,000 allocations. Cyclic garbage is
still collected, later; memory stays bounded by that count.
"""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]

#: Allocations between young collections, and collections between older ones.
THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Freeze the objects built so far and set `THRESHOLDS` (call once, after start-up)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
