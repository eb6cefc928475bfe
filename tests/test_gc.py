"""A streaming process collects at a streaming pace (`stream._gc`)."""

from __future__ import annotations

import gc

from sluice.stream._gc import THRESHOLDS, tune_gc


def test_tuning_freezes_what_was_built_and_slows_the_young_collections() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == THRESHOLDS
        assert gc.get_freeze_count() > 1000  # the modules and objects built so far
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # cyclic garbage is still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
