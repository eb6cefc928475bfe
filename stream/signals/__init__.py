"""Signals a line filter cannot see (silences, rate shifts, new lines, missing steps, slow edges):
`counter` counts every batch in the filter stage, `detector` compares spans with the `baselines`
in the analysis stage, `codec` stores the detector's state, versioned.

Importing the package loads none of its modules (`stream._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.stream._lazy import lazy_names

if TYPE_CHECKING:
    from sluice.stream.signals.codec import DETECTOR_STATE_VERSION, dump_detector, load_detector
    from sluice.stream.signals.counter import Key, SignalCounter, counts_of
    from sluice.stream.signals.detector import ANY_LINE, SignalDetector, SignalSettings

__all__ = [
    "ANY_LINE",
    "DETECTOR_STATE_VERSION",
    "Key",
    "SignalCounter",
    "SignalDetector",
    "SignalSettings",
    "counts_of",
    "dump_detector",
    "load_detector",
]

__getattr__, __dir__ = lazy_names(
    globals(),
    {
        "sluice.stream.signals.counter": ["Key", "SignalCounter", "counts_of"],
        "sluice.stream.signals.detector": ["ANY_LINE", "SignalDetector", "SignalSettings"],
        "sluice.stream.signals.codec": ["DETECTOR_STATE_VERSION", "dump_detector", "load_detector"],
    },
)
