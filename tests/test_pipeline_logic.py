"""Pure pipeline logic: parsing, records, screening, windows, alerts and feedback, scan."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from sluice.models.analyst import HeuristicAnalyst
from sluice.models.filter import KeywordFilter, OnnxFilter, normalize_batch
from sluice.stream import PipelineSettings
from sluice.stream.analysis import AnalysisState, ClosedWindow, MemoryStore, bundle_of
from sluice.stream.filtering.screen import screen_batch
from sluice.stream.ingest.parsing import ParseError, parse_batch, parse_event
from sluice.stream.ingest.sources import read_records
from sluice.stream.records import (
    DEAD_LETTER_KEEP_BYTES,
    Alert,
    DeadLetter,
    Event,
    Feedback,
    Suspect,
    SuspectBatch,
    parse_suspects_record,
    record_schema,
)
from sluice.stream.scan import scan

T0 = datetime(2023, 1, 29, 8, 52, tzinfo=UTC)
DEMO = (
    Path(__file__).resolve().parents[1] / "stream" / "demo" / "trainticket-contacts-fault.jsonl.gz"
)


@given(st.binary(max_size=300))
def test_parse_never_raises_anything_but_parse_error(raw: bytes) -> None:
    try:
        e = parse_event(raw, None, "svc", 200)
    except ParseError as exc:
        assert str(exc)
    else:
        assert Event.model_validate_json(e.to_bytes()) == e  # and it round-trips


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"x" * 300, "exceeds the maximum"),
        (b'{"message": "trunc', "invalid JSON"),
        (b"[1, 2, 3]", None),  # JSON, but not an object: text
        (b"[Sun Dec 04 04:47:44 2005] [error] mod_jk child init 1 -2", None),
        (b"", "empty event"),
        (b"   \n", "empty event"),
        (b'{"level": "error"}', "without a message"),
        (b'"just a string"', None),  # a plain line that happens to start with a quote
    ],
)
def test_bad_records_get_a_reason(raw: bytes, reason: str | None) -> None:
    if reason is None:
        assert parse_event(raw, None, "svc", 200).message == raw.decode()
        return
    with pytest.raises(ParseError, match=reason):
        parse_event(raw, None, "svc", 200)


def test_json_and_text_fields() -> None:
    e = parse_event(
        b'{"@timestamp": 1674982284968, "app": "pay", "severity": "warning", '
        b'"msg": "slow", "region": "eu", "n": 3}',
        None,
        "d",
        10_000,
    )
    assert (e.service, e.level, e.message) == ("pay", "WARN", "slow")
    assert e.ts == datetime(2023, 1, 29, 8, 51, 24, 968000, tzinfo=UTC)
    assert e.attributes == {"region": "eu", "n": "3"}
    t = parse_event(b"2024-05-01 10:00:00,123 ERROR [main] db down", b"orders", "d", 10_000)
    assert (t.service, t.level) == ("orders", "ERROR")
    assert t.ts == datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)
    k8s = parse_event(
        json.dumps(
            {
                "service": "ts-order-service-5b67c48447-mv5hb",
                "log": '{"log": "hi\\n", "stream": "stdout"}',
            }
        ).encode(),
        None,
        "d",
        10_000,
    )
    assert (k8s.service, k8s.message) == ("ts-order-service", "hi")


def test_deadletter_keeps_the_raw_bytes() -> None:
    d = DeadLetter.of(b"\xff\x00raw", "events", 3, 42, "invalid UTF-8 at byte 0")
    back = DeadLetter.model_validate_json(d.to_bytes())
    assert base64.b64decode(back.value_b64) == b"\xff\x00raw"
    assert (back.partition, back.offset) == (3, 42)


def test_schemas_are_versioned() -> None:
    for name in ("alert", "feedback", "event", "suspect", "deadletter"):
        assert "schema_version" in record_schema(name)["properties"]  # type: ignore[arg-type]


def ev(i: int, text: str = "ERROR boom", service: str = "a", sec: float = 0) -> Event:
    return Event(
        ts=T0 + timedelta(seconds=sec),
        service=service,
        level=text.split()[0],
        message=f"{text} {i}",
    )


def _screen(values: list[bytes], cfg: PipelineSettings, keywords: list[str]) -> list[Suspect]:
    out = screen_batch(
        values, [None] * len(values), lambda i: (f"t:{i}", None, None), KeywordFilter(keywords), cfg
    )
    assert not out.dead
    recs = [parse_suspects_record(m) for ms in out.messages.values() for m in ms]
    return [s for r in recs if isinstance(r, SuspectBatch) for s in r.suspects]


def test_screen_flags_and_samples_deterministically() -> None:
    cfg = PipelineSettings(audit_rate=0.2)
    values = [f"INFO fine {i}".encode() for i in range(2000)] + [
        f"ERROR boom {i}".encode() for i in range(10)
    ]
    s1 = _screen(values, cfg, ["boom"])
    s2 = _screen(values, cfg, ["boom"])
    assert [x.event for x in s1] == [x.event for x in s2]  # content-hashed, repeatable
    flagged = [x for x in s1 if not x.audit]
    audits = [x for x in s1 if x.audit]
    assert len(flagged) == 10 and all(x.sampling_probability == 1.0 for x in flagged)
    assert 300 < len(audits) < 500 and all(x.sampling_probability == 0.2 for x in audits)
    assert {x.event.source for x in flagged} == {f"t:{i}" for i in range(2000, 2010)}


def test_screen_splits_large_batches_under_the_record_limit() -> None:
    from sluice.stream.filtering.screen import MAX_SUSPECTS_MESSAGE_BYTES

    values = [(f"ERROR {i} " + "x" * 4000).encode() for i in range(600)]  # ~2.4 MB flagged
    out = screen_batch(
        values,
        [None] * 600,
        lambda i: ("f", None, None),
        KeywordFilter(["error"]),
        PipelineSettings(),
    )
    messages = out.messages["default"]
    assert len(messages) >= 3 and all(len(m) <= MAX_SUSPECTS_MESSAGE_BYTES for m in messages)
    got = [s.event.message for m in messages for s in parse_suspects_record(m).suspects]  # type: ignore[union-attr]
    assert got == [v.decode() for v in values]


def suspect(sec: float, scope: str = "s", text: str = "ERROR x", audit: bool = False) -> Suspect:
    return Suspect(
        event=ev(int(sec), text, sec=sec),
        score=0.9,
        model_version="m",
        audit=audit,
        sampling_probability=0.01 if audit else 1.0,
        scope=scope,
    )


def _closed(state: AnalysisState, scope: str) -> list[ClosedWindow]:
    return [state.window(scope, seq) for seq, _ in state.due(scope, ignore_wait=True)]


def test_windows_close_on_watermark_size_idle_and_end() -> None:
    now = [0.0]
    cfg = PipelineSettings(window_s=60, allowed_lateness_s=10, max_bundle_events=5, idle_close_s=30)
    c = AnalysisState(cfg, MemoryStore(), lambda: now[0])
    c.add("s", [suspect(5), suspect(50)])
    c.add("s", [suspect(65)])  # the 0-60 window waits for late events until 70
    assert _closed(c, "s") == []
    c.add("s", [suspect(71)])
    closed = _closed(c, "s")
    assert [(w.reason, len(w.suspects)) for w in closed] == [("watermark", 2)]
    assert closed[0].suspects[0].event.ts < closed[0].suspects[1].event.ts
    c.add("s", [suspect(30)])  # its window closed: the event reopens it
    assert len(_closed(c, "s")) == 1 and c.open_events("s") == 3
    c.add("t", [suspect(100 + i, scope="t") for i in range(4)])
    assert _closed(c, "t") == []
    c.add("t", [suspect(104, scope="t")])
    assert [w.reason for w in _closed(c, "t")] == ["full"]
    now[0] = 31
    c.close_idle("s")
    c.close_idle("t")
    assert [w.reason for w in _closed(c, "s")] == ["watermark", "idle", "idle"]
    c.close_all("s")
    assert c.open_events("s") == 0 and len(_closed(c, "s")) == 3


def test_state_survives_a_round_trip_through_its_store() -> None:
    """What the worker keeps in its table is all there is: a new owner continues from it."""
    cfg = PipelineSettings(window_s=60, allowed_lateness_s=10)
    store = MemoryStore()
    AnalysisState(cfg, store, lambda: 0.0).add("s", [suspect(5), suspect(6)])
    heir = AnalysisState(cfg, store, lambda: 0.0)  # another process, the same changelog
    heir.add("s", [suspect(80)])
    (w,) = _closed(heir, "s")
    assert [s.event.message for s in w.suspects] == ["ERROR x 5", "ERROR x 6"]


def _window_events(i: int) -> list[Suspect]:
    def one(service: str, text: str, ms: int) -> Suspect:
        return Suspect(
            event=Event(
                ts=T0 + timedelta(seconds=i, milliseconds=ms),
                service=service,
                level="ERROR",
                message=f"{text} {i}",
                trace_id=f"t{i}",
            ),
            score=0.9,
            model_version="m",
            audit=False,
            sampling_probability=1,
            scope="s",
        )

    return [one("db", "ERROR db timeout", 0), one("api", "ERROR db call failed", 5)]


async def _analyse_all(state: AnalysisState, scope: str) -> tuple[list[Alert], list[Feedback]]:
    for w in _closed(state, scope):
        analysis = await HeuristicAnalyst().analyze(bundle_of(w))
        state.on_analysed(w.analysed(analysis, datetime.now(UTC)))
    out = state.publish(scope)
    return out.alerts, out.feedback


def test_alert_revisions_and_resolution() -> None:
    async def go() -> None:
        cfg = PipelineSettings(window_s=60, allowed_lateness_s=0, alert_time="event")
        state = AnalysisState(cfg, MemoryStore(), lambda: 0.0)
        state.add("s", [s for i in range(12) for s in _window_events(i)])
        state.close_all("s")
        a1, fb = await _analyse_all(state, "s")
        assert [(a.status, a.revision) for a in a1] == [("firing", 1)]
        assert a1[0].generated_at == T0 + timedelta(seconds=60)  # event time: reproducible
        assert a1[0].report.root_causes[0].service == "db"
        assert {f.template for f in fb} == set(a1[0].evidence.values())
        state.add("s", [s for i in range(60, 72) for s in _window_events(i)])
        state.close_all("s")
        a2, _ = await _analyse_all(state, "s")
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
        a3, fb3 = await _analyse_all(state, "s")
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
        state.add("s", [s for i in range(12) for s in _window_events(i)])
        state.close_all("s")
        (a1,), _ = await _analyse_all(state, "s")
        wall[0] += 299
        assert state.publish("s").alerts == []  # not quiet long enough
        state.add("s", [s for i in range(60, 72) for s in _window_events(i)])
        state.close_all("s")
        (a2,), _ = await _analyse_all(state, "s")  # raised again at 1299: a new period
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
            state.add("s", [s for i in range(60 * k, 60 * k + 5) for s in _window_events(i)])
        state.close_all("s")
        windows = _closed(state, "s")
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
        (w,) = _closed(state, "s")
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


def test_scan_of_the_demo_names_the_faulty_service() -> None:
    cfg = PipelineSettings(alert_time="event")
    result = asyncio.run(
        scan(
            read_records(str(DEMO)),
            cfg,
            OnnxFilter(),
            HeuristicAnalyst(),
            lambda: datetime.now(UTC),
        )
    )
    assert result.events == 6306 and not result.deadletters
    c = result.counters
    assert 0 < c.flagged < result.events * 0.05  # the model forwards few ...
    # ... and first sight adds O(k ln n) sightings per template the model did not flag (k = 3)
    messages = parse_batch([r[0] for r in read_records(str(DEMO))], cfg.max_event_bytes).messages
    templates = len(set(normalize_batch(messages)))
    assert 0 < c.first_sight <= templates * 3 * (np.log(600) + 1)
    assert result.suspects == c.flagged + c.audited
    high = [a for a in result.alerts if a.report.severity in ("critical", "high")]
    assert high and all(a.report.root_causes[0].service == "ts-contacts-service" for a in high)
    assert all(isinstance(a, Alert) for a in result.alerts)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
_FIELDS = ["ts", "time", "@timestamp", "service", "level", "message", "log", "trace_id", "host"]


@settings(deadline=2000, max_examples=300)
@given(st.dictionaries(st.sampled_from(_FIELDS), _json_values, max_size=6))
def test_any_json_object_becomes_an_event_or_a_dead_letter(obj: dict[str, object]) -> None:
    """Every field with every type, numbers Python's json accepts included (NaN, 1e400, 10**30)."""
    raw = json.dumps(obj).encode()
    out = screen_batch(
        [raw], [None], lambda i: ("t", 0, i), KeywordFilter([""]), PipelineSettings()
    )  # the empty keyword flags everything: the whole record is built and serialized
    if out.dead:
        assert out.dead[0].reason and out.dead[0].offset == 0
    else:
        (s,) = _screen([raw], PipelineSettings(), [""])
        assert isinstance(s.event.message, str)


def test_records_too_large_for_kafka_become_dead_letters_that_fit() -> None:
    """A 1 MB line, and an event too large to forward, end as dead letters under Kafka's limit
    (a record the producer cannot deliver would be retried forever)."""
    huge = b"ERROR " + b"x" * 1_000_000
    out = screen_batch([huge], [None], lambda i: ("t", 0, 7), KeywordFilter(), PipelineSettings())
    (d,) = out.dead
    assert "exceeds the maximum" in d.reason and (d.size, d.truncated, d.offset) == (
        len(huge),
        True,
        7,
    )
    assert len(d.to_bytes()) < 1_000_000
    assert base64.b64decode(d.value_b64) == huge[:DEAD_LETTER_KEEP_BYTES]
    big = PipelineSettings(max_event_bytes=2_000_000)
    out = screen_batch([huge], [None], lambda i: ("t", 0, 7), KeywordFilter(), big)
    assert not out.messages and "exceeds a suspects record" in out.dead[0].reason


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
