"""The signal detector's state as bytes, for the analysis state store, with a state version.

Version 1 (releases before the version was written) and version 2 have the same layout; 2 adds
`"v"`. A release reads every version up to its own and refuses a newer one with
`StateVersionError` (the record is dead-lettered, the worker goes on), never misreads it.
Service names and line shapes are written once, in `strings`, and referred to by position.
Spans and metrics (`signals.telemetry`) came within version 2 as an optional `"telemetry"` key:
a release before them ignores it (its scope's span baselines are relearned after a rollback),
and this one reads a state without it as an empty one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import orjson

from sluice.stream.errors import StateVersionError
from sluice.stream.settings import SignalSettings
from sluice.stream.signals.baselines import _Bucket, _Decaying, _Ewma, _Step
from sluice.stream.signals.counter import Key
from sluice.stream.signals.detector import SignalDetector
from sluice.stream.signals.telemetry import Telemetry

__all__ = ["DETECTOR_STATE_VERSION", "dump_detector", "load_detector"]

#: The layout `dump_detector` writes; `load_detector` reads it and every earlier one.
DETECTOR_STATE_VERSION = 2


def dump_detector(self: SignalDetector) -> bytes:
    """The detector's state (baselines and the buckets not in them yet), for a state store.
    Service names and line shapes are written once, in `strings`, and referred to by
    position (each appears in several tables)."""
    pos: dict[str, int] = {}

    def at(text: str) -> int:
        return pos.setdefault(text, len(pos))

    def ewmas(table: Mapping[Key, _Ewma | _Decaying]) -> list[list[object]]:
        return [[at(s), at(t), *v.row()] for (s, t), v in table.items()]

    def bucket(b: _Bucket) -> list[object]:
        return [
            [[at(s), c] for s, c in b.services.items()],
            [[at(s), at(t), c, b.traced.get((s, t), 0)] for (s, t), c in b.templates.items()],
            [[at(a), at(c), g] for (a, c), g in b.gaps.items()],
            [[at(s), at(t), [[at(s2), at(t2), k] for (s2, t2), k in nxt.items()]]
             for (s, t), nxt in b.steps.items()],
        ]  # fmt: skip

    state: dict[str, object] = {
        "absorbed": self._absorbed,
        "watermark": self.watermark if self.watermark > -math.inf else None,
        "rates": [[at(k), *v.row()] for k, v in self._rates.items()],
        "block_rates": [[at(k), *v.row()] for k, v in self._block_rates.items()],
        "block": [[[at(k), c] for k, c in self._block.items()], self._block_n,
                  [[at(s), at(t), c] for (s, t), c in self._block_templates.items()],
                  [[at(a), at(c), g] for (a, c), g in self._block_gaps.items()]],
        "shares": ewmas(self._template_shares),
        "absorbed_n": self._absorbed_n,
        "templates": ewmas(self._template_rates),
        "traced": ewmas(self._traced),
        "next": [[at(s), at(t), ewmas(nxt)] for (s, t), nxt in self._next.items()],
        "edges": [[at(a), at(b), *v.row()] for (a, b), v in self._edge_p95.items()],
        "buckets": [[n, bucket(b)] for n, b in sorted(self._buckets.items())],
    }  # fmt: skip
    telemetry = self.telemetry
    if telemetry.buckets or telemetry.selves or telemetry.outside or telemetry.metrics:
        state["telemetry"] = telemetry.dump(at)  # an addition within version 2 (see above)
    state["strings"] = list(pos)
    state["v"] = DETECTOR_STATE_VERSION
    return orjson.dumps(state)


def load_detector(
    raw: bytes, cfg: SignalSettings | None = None, key: str = "signals"
) -> SignalDetector:
    x = orjson.loads(raw)
    version = x.get("v", 1)
    if version > DETECTOR_STATE_VERSION:
        raise StateVersionError(key, version, DETECTOR_STATE_VERSION)
    text: list[str] = x["strings"]

    def ewmas(rows: list[list[Any]], kind: type[Any] = _Ewma) -> dict[Key, Any]:
        return {(text[s], text[t]): kind(*v) for s, t, *v in rows}

    def pairs(rows: list[list[Any]]) -> dict[Key, Any]:
        return {(text[a], text[b]): v for a, b, v in rows}

    d = SignalDetector(cfg)
    d._absorbed = int(x["absorbed"])
    d.watermark = float(x["watermark"]) if x["watermark"] is not None else -math.inf
    d._rates = {text[k]: _Ewma(*v) for k, *v in x["rates"]}
    d._block_rates = {text[k]: _Ewma(*v) for k, *v in x["block_rates"]}
    block, d._block_n, templates, gaps = x["block"]
    d._block = Counter({text[k]: c for k, c in block})
    d._block_templates = Counter(pairs(templates))
    d._block_gaps = {k: list(g) for k, g in pairs(gaps).items()}
    d._template_shares = ewmas(x["shares"])
    d._absorbed_n = int(x["absorbed_n"])
    d._template_rates = ewmas(x["templates"], _Decaying)
    d._traced = ewmas(x["traced"], _Decaying)
    d._next = {(text[s], text[t]): ewmas(nxt, _Step) for s, t, nxt in x["next"]}
    d._edge_p95 = {(text[a], text[b]): _Ewma(*v) for a, b, *v in x["edges"]}
    if "telemetry" in x:
        d.telemetry = Telemetry.load(x["telemetry"], text, d.cfg)
    for n, (services, lines, edge_gaps, steps) in x["buckets"]:
        b = d._buckets[int(n)] = _Bucket()
        b.services.update({text[k]: c for k, c in services})
        for sv, t, c, traced in lines:
            b.templates[(text[sv], text[t])] = c
            if traced:
                b.traced[(text[sv], text[t])] = traced
        b.gaps.update({k: list(g) for k, g in pairs(edge_gaps).items()})
        for sv, t, nxt in steps:
            b.steps[(text[sv], text[t])] = Counter(pairs(nxt))
    return d
