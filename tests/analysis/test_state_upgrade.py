"""State that survives an upgrade: the analysis state a worker of 0.1.0 (commit 4b4448b, state
version 1) left in its changelog is read by this release, which goes on from it exactly as the
old release did; a value of a newer version is refused, never misread."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.models.analyst import HeuristicAnalyst
from sluice.stream import PipelineSettings
from sluice.stream.analysis import STATE_VERSION, AnalysisState, MemoryStore, bundle_of
from sluice.stream.analysis.state import load_scope
from sluice.stream.errors import StateVersionError
from sluice.stream.records import Alert, SuspectBatch, Tick, parse_suspects_record
from sluice.stream.signals.codec import DETECTOR_STATE_VERSION, dump_detector, load_detector
from tests.support.pipeline import suspect

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "changelog-v1.json"


@pytest.fixture(scope="module")
def v1() -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads(FIXTURE.read_text())
    return fixture


def _store(v1: dict[str, Any]) -> MemoryStore:
    store = MemoryStore()
    store.data = {k: v.encode() for k, v in v1["store"].items()}
    return store


def _continue(
    state: AnalysisState, inputs: list[bytes], offset: int, wall: list[float]
) -> list[Alert]:
    """What the fixture's writer did after the snapshot: each record applied in turn, each due
    window analysed by the heuristic analyst and its result applied next; then the end."""
    analyst, alerts, queue = HeuristicAnalyst(), [], list(inputs)

    async def analyse(scope: str, seq: int) -> bytes:
        w = state.window(scope, seq)
        result = await analyst.analyze(bundle_of(w))
        return w.analysed(result, datetime.fromtimestamp(wall[0], UTC)).to_bytes()

    while queue:
        wall[0] += 1.0
        effects = state.apply(0, offset, queue.pop(0))
        offset += 1
        alerts += effects.alerts
        for scope, seq, _attempt in effects.due:
            queue.insert(0, asyncio.run(analyse(scope, seq)))
    for scope in state.scopes(0):
        state.close_all(scope)
        while due := state.due(scope, ignore_wait=True):
            for seq, _attempt in due:
                alerts += state.apply(0, None, asyncio.run(analyse(scope, seq))).alerts
    return alerts


def test_the_previous_releases_changelog_is_read_and_continued_as_it_would_have_been(
    v1: dict[str, Any],
) -> None:
    assert all(b'"v"' not in v.encode()[:8] for v in v1["store"].values())  # truly version 1
    cfg = PipelineSettings.model_validate(v1["settings"])
    wall = [float(v1["wall"])]
    state = AnalysisState(cfg, _store(v1), lambda: wall[0], "suspects")
    firing = load_scope("scope/default", state.store.get("scope/default")).firing
    assert firing and all(isinstance(a, Alert) for a in firing.values())  # JSON in JSON, parsed
    inputs = [base64.b64decode(x) for x in v1["inputs_after"]]
    alerts = _continue(state, inputs, v1["next_offset"], wall)
    now = [json.loads(a.to_bytes()) for a in alerts]
    # fields added since the fixture was written: the rest is as it would have been
    assert all(isinstance(a.pop("anomalous"), list) for a in now)
    assert now == v1["alerts_after"]
    assert v1["alerts_after"], "the fixture holds alerts to compare"
    # everything this release wrote back is of its own version
    for key, raw in state.store.data.items():
        assert orjson.loads(raw)["v"] == (
            DETECTOR_STATE_VERSION if key.startswith("signals/") else STATE_VERSION
        )


def test_a_replayed_record_of_the_old_changelog_is_not_applied_twice(v1: dict[str, Any]) -> None:
    state = AnalysisState(PipelineSettings.model_validate(v1["settings"]), _store(v1), lambda: 0.0)
    assert state.apply(0, v1["next_offset"] - 1, b"{}").replayed


def test_the_old_detector_state_reads_as_it_was_written(v1: dict[str, Any]) -> None:
    raw = v1["store"]["signals/default"].encode()
    written = orjson.loads(dump_detector(load_detector(raw)))
    assert written.pop("v") == DETECTOR_STATE_VERSION
    assert written == orjson.loads(raw) and written["buckets"]  # every table, as it was


def test_a_newer_releases_state_is_refused_naming_both_versions(v1: dict[str, Any]) -> None:
    cfg = PipelineSettings.model_validate(v1["settings"])
    store = _store(v1)
    scope = orjson.loads(store.data["scope/default"])
    store.data["scope/default"] = orjson.dumps({**scope, "v": STATE_VERSION + 97})
    state = AnalysisState(cfg, store, lambda: float(v1["wall"]))
    batch = next(
        x for x in (base64.b64decode(i) for i in v1["inputs_after"])
        if isinstance(parse_suspects_record(x), SuspectBatch)
    )  # fmt: skip
    with pytest.raises(StateVersionError) as raised:
        state.apply(0, v1["next_offset"], batch)
    assert (raised.value.found, raised.value.known) == (STATE_VERSION + 97, STATE_VERSION)
    assert "newer than this release reads" in str(raised.value)
    detector = orjson.loads(store.data["signals/default"])
    with pytest.raises(StateVersionError):
        load_detector(orjson.dumps({**detector, "v": DETECTOR_STATE_VERSION + 1}), key="signals/x")


def test_a_tick_passes_over_a_scope_it_cannot_read_and_serves_the_others(
    v1: dict[str, Any],
) -> None:
    cfg = PipelineSettings.model_validate(v1["settings"])
    wall = [float(v1["wall"])]
    store = _store(v1)
    state = AnalysisState(cfg, store, lambda: wall[0])
    other = SuspectBatch(scope="other", suspects=[suspect(1, "other"), suspect(2, "other")])
    state.apply(0, v1["next_offset"], other.to_bytes())
    scope = orjson.loads(store.data["scope/default"])
    store.data["scope/default"] = orjson.dumps({**scope, "v": STATE_VERSION + 1})
    wall[0] += cfg.idle_close_s
    effects = state.apply(0, v1["next_offset"] + 1, Tick().to_bytes())
    assert [scope for scope, _seq, _attempt in effects.due] == ["other"]  # its window closed
    assert state.scopes(0) == ["default", "other"]  # the unreadable one is kept, not evicted
