"""The analysis state machine: windows, revisions, resolution, order, failures, caps, chunks."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import TypeAdapter

from sluice.models.analyst import HeuristicAnalyst
from sluice.stream import PipelineSettings
from sluice.stream.analysis import AnalysisState, MemoryStore, bundle_of
from sluice.stream.records import (
    Feedback,
    Suspect,
    SuspectBatch,
)
from tests.support.pipeline import T0, analyse_all, closed_windows, ev, suspect, window_events


def test_windows_close_on_watermark_size_idle_and_end() -> None:
    now = [0.0]
    cfg = PipelineSettings(window_s=60, allowed_lateness_s=10, max_bundle_events=5, idle_close_s=30)
    c = AnalysisState(cfg, MemoryStore(), lambda: now[0])
    c.add("s", [suspect(5), suspect(50)])
    c.add("s", [suspect(65)])  # the 0-60 window waits for late events until 70
    assert closed_windows(c, "s") == []
    c.add("s", [suspect(71)])
    closed = closed_windows(c, "s")
    assert [(w.reason, len(w.suspects)) for w in closed] == [("watermark", 2)]
    assert closed[0].suspects[0].event.ts < closed[0].suspects[1].event.ts
    c.add("s", [suspect(30)])  # its window closed: the event reopens it
    assert len(closed_windows(c, "s")) == 1 and c.open_events("s") == 3
    c.add("t", [suspect(100 + i, scope="t") for i in range(4)])
    assert closed_windows(c, "t") == []
    c.add("t", [suspect(104, scope="t")])
    assert [w.reason for w in closed_windows(c, "t")] == ["full"]
    now[0] = 31
    c.close_idle("s")
    c.close_idle("t")
    assert [w.reason for w in closed_windows(c, "s")] == ["watermark", "idle", "idle"]
    c.close_all("s")
    assert c.open_events("s") == 0 and len(closed_windows(c, "s")) == 3


def test_state_survives_a_round_trip_through_its_store() -> None:
    """What the worker keeps in its table is all there is: a new owner continues from it."""
    cfg = PipelineSettings(window_s=60, allowed_lateness_s=10)
    store = MemoryStore()
    AnalysisState(cfg, store, lambda: 0.0).add("s", [suspect(5), suspect(6)])
    heir = AnalysisState(cfg, store, lambda: 0.0)  # another process, the same changelog
    heir.add("s", [suspect(80)])
    (w,) = closed_windows(heir, "s")
    assert [s.event.message for s in w.suspects] == ["ERROR x 5", "ERROR x 6"]


def test_alert_revisions_and_resolution() -> None:
    async def go() -> None:
        cfg = PipelineSettings(window_s=60, allowed_lateness_s=0, alert_time="event")
        state = AnalysisState(cfg, MemoryStore(), lambda: 0.0)
        state.add("s", [s for i in range(12) for s in window_events(i)])
        state.close_all("s")
        a1, fb = await analyse_all(state, "s")
        assert [(a.status, a.revision) for a in a1] == [("firing", 1)]
        assert a1[0].generated_at == T0 + timedelta(seconds=60)  # event time: reproducible
        assert a1[0].report.root_causes[0].service == "db"
        assert {f.template for f in fb} == set(a1[0].evidence.values())
        state.add("s", [s for i in range(60, 72) for s in window_events(i)])
        state.close_all("s")
        a2, _ = await analyse_all(state, "s")
        assert [(a.fingerprint, a.revision) for a in a2] == [(a1[0].fingerprint, 2)]
        state.add(
            "s",
            [
                Suspect(
                    event=ev(1, "INFO all good", service="api", sec=180),
                    score=0.1,
                    model_version="m",
                    audit=True,
                    sampling_probability=0.01,
                    scope="s",
                )
            ],
        )
        state.close_all("s")
        a3, fb3 = await analyse_all(state, "s")
        assert [(a.status, a.revision) for a in a3] == [("resolved", 3)]
        assert [(f.source, f.weight, f.label) for f in fb3] == [("heuristic", 100.0, False)]

    asyncio.run(go())


def test_a_firing_alert_resolves_after_the_quiet_period_unless_raised_again() -> None:
    """A scope that goes quiet sends no `info` window: the alert resolves `resolve_after_s`
    after the last window that raised it, and each new revision starts the period again."""

    async def go() -> None:
        wall = [1000.0]
        cfg = PipelineSettings(window_s=60, allowed_lateness_s=0, resolve_after_s=300)
        state = AnalysisState(cfg, MemoryStore(), lambda: wall[0])
        state.add("s", [s for i in range(12) for s in window_events(i)])
        state.close_all("s")
        (a1,), _ = await analyse_all(state, "s")
        wall[0] += 299
        assert state.publish("s").alerts == []  # not quiet long enough
        state.add("s", [s for i in range(60, 72) for s in window_events(i)])
        state.close_all("s")
        (a2,), _ = await analyse_all(state, "s")  # raised again at 1299: a new period
        assert (a2.status, a2.revision) == ("firing", 2)
        wall[0] += 299
        assert state.publish("s").alerts == []
        wall[0] += 1
        (done,) = state.publish("s").alerts
        assert (done.fingerprint, done.status, done.revision) == (a1.fingerprint, "resolved", 3)
        assert done.generated_at == datetime.fromtimestamp(1599, UTC)
        assert done.report == a2.report  # the last revision's report, resolved
        assert state.publish("s").alerts == []  # once
        assert state.scope_state("s").firing == {}
        assert sum(state.counters.alerts.values()) == 3  # two revisions and the resolution

    asyncio.run(go())


def test_results_publish_in_window_order_whatever_order_they_finish_in() -> None:
    async def go() -> None:
        cfg = PipelineSettings(window_s=60, allowed_lateness_s=0, alert_time="event")
        state = AnalysisState(cfg, MemoryStore(), lambda: 0.0)
        for k in range(3):
            state.add("s", [s for i in range(60 * k, 60 * k + 5) for s in window_events(i)])
        state.close_all("s")
        windows = closed_windows(state, "s")
        assert [w.seq for w in windows] == [0, 1, 2]
        for w in reversed(windows):  # the last one finishes first
            analysis = await HeuristicAnalyst().analyze(bundle_of(w))
            state.on_analysed(w.analysed(analysis, datetime.now(UTC)))
            if w.seq:
                assert state.publish("s").alerts == []  # held until window 0 is done
        alerts = state.publish("s").alerts
        assert [a.revision for a in alerts] == [1, 2, 3]
        assert [a.generated_at for a in alerts] == [
            T0 + timedelta(seconds=60 * (k + 1)) for k in range(3)
        ]

    asyncio.run(go())


def test_a_window_whose_analysis_keeps_failing_is_dead_lettered() -> None:
    now = [0.0]
    cfg = PipelineSettings(max_analysis_failures=3, retry_after_s=10)
    state = AnalysisState(cfg, MemoryStore(), lambda: now[0])
    state.add("s", [suspect(5), suspect(6)])
    state.close_all("s")
    for attempt in range(3):
        (w,) = closed_windows(state, "s")
        state.on_analysed(w.failed("RuntimeError", datetime.now(UTC)))
        assert state.due("s") == []  # waits retry_after_s before the next try
        now[0] += 10
        if attempt < 2:
            assert state.publish("s").dead == []
    out = state.publish("s")
    assert len(out.dead) == 1 and "analysis failed 3 times: RuntimeError" in out.dead[0].reason
    back = json.loads(base64.b64decode(out.dead[0].value_b64))
    assert [s["event"]["message"] for s in back] == ["ERROR x 5", "ERROR x 6"]
    assert state.due("s") == [] and state.pending("s") == 0


def test_scopes_beyond_the_cap_are_dead_lettered_and_idle_scopes_evicted() -> None:
    now = [0.0]
    cfg = PipelineSettings(max_live_scopes=2, scope_evict_s=100, idle_close_s=10)
    state = AnalysisState(cfg, MemoryStore(), lambda: now[0])
    batch = lambda scope: SuspectBatch(scope=scope, suspects=[suspect(5, scope)])  # noqa: E731
    assert state.on_suspects(0, 1, batch("a")) == [] and state.on_suspects(0, 2, batch("b")) == []
    (dead,) = state.on_suspects(0, 3, batch("c"))
    assert "max_live_scopes" in dead.reason and dead.offset == 3
    assert state.on_suspects(1, 4, batch("c")) == []  # another partition has room
    now[0] = 20
    state.on_tick(0)  # windows close on idle, nothing published yet: the scopes stay
    assert state.scopes(0) == ["a", "b"]
    for scope in ("a", "b"):  # as if analysed, resolved and quiet since
        state.store.put(f"scope/{scope}", b'{"revisions": {"fp": 3}, "touched": 20}')
    now[0] = 200
    state.on_tick(0)
    assert state.scopes(0) == []
    assert state.scope_state("a").revisions == {"fp": 3}  # a returning incident goes on at 4
    assert state.on_suspects(0, 5, batch("c")) == []  # room again under the cap


def test_feedback_weights_audit_samples() -> None:
    f = Feedback(
        template="t", label=True, source="audit", weight=200.0, model_version="m", score=0.1
    )
    assert Feedback.model_validate_json(f.to_bytes()) == f


def test_chunk_cache_is_bounded_and_answers_by_content() -> None:
    from sluice.stream.analysis import ChunkCache

    one = [suspect(1)]
    raw = TypeAdapter(list[Suspect]).dump_json(one)
    cache = ChunkCache(max_bytes=len(raw) * 2)
    cache.put(raw, one)
    assert cache.get("chunk/s/0", bytes(raw)) is one  # equal bytes, another object: the same entry
    for i in range(5):
        cache.put(TypeAdapter(list[Suspect]).dump_json([suspect(10 + i)]), [suspect(10 + i)])
    assert (
        cache.get("chunk/s/0", raw) == one and cache.get("chunk/s/0", raw) is not one
    )  # evicted, parsed again


def test_a_suspects_record_parses_its_scope_state_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A suspects record reads its scope's state three times (add, publish, due): parsed from
    the store once, then the object saved, while the store holds the bytes saved with it; a
    record that fails half-way leaves nothing of its changes to the next one."""
    from sluice.stream.analysis import machine

    parsed: list[str] = []
    load = machine.load_scope
    monkeypatch.setattr(machine, "load_scope", lambda k, raw: parsed.append(k) or load(k, raw))
    cfg = PipelineSettings(window_s=60, allowed_lateness_s=10)
    store = MemoryStore()
    state = AnalysisState(cfg, store, lambda: 0.0)
    record = lambda *secs: SuspectBatch(scope="s", suspects=[suspect(x) for x in secs]).to_bytes()  # noqa: E731
    state.apply(0, 0, record(5, 6))
    assert parsed == ["scope/s"]
    store.put("scope/s", bytes(bytearray(store.get("scope/s") or b"")))  # the same, other bytes
    state.apply(0, 1, record(80))  # closes the first window
    assert parsed == ["scope/s", "scope/s"]
    assert [len(w.suspects) for w in closed_windows(state, "s")] == [2]

    def half_way(*_args: object) -> None:
        state.scope_state("s").open.clear()  # changed, then the record fails
        raise RuntimeError("half-way")

    monkeypatch.setattr(state._windows, "add", half_way)
    with pytest.raises(RuntimeError):
        state.apply(0, 2, record(90))
    assert state.open_events("s") == 1  # the stored state, not the one changed half-way
