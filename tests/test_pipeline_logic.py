"""Pure pipeline logic: parsing, records, screening, windows, alerts and feedback, scan."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.analyst import HeuristicAnalyst
from models.filter import KeywordFilter, OnnxFilter
from stream._parse import ParseError, parse_event
from stream._pipeline import AlertBook, WindowCollector, analyse_window, screen
from stream._records import Alert, DeadLetter, Event, Feedback, Suspect, record_schema
from stream._scan import scan
from stream._settings import PipelineSettings
from stream._sources import read_records

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
        (b"\xff\xfe\xfd", "invalid UTF-8"),
        (b"x" * 300, "exceeds the maximum"),
        (b'{"message": "trunc', "invalid JSON"),
        (b"[1, 2, 3]", "JSON list"),
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


def test_screen_flags_and_samples_deterministically() -> None:
    cfg = PipelineSettings(audit_rate=0.2)
    events = [ev(i, "INFO fine") for i in range(2000)] + [ev(i) for i in range(10)]
    s1 = screen(events, KeywordFilter(["boom"]), cfg)
    s2 = screen(events, KeywordFilter(["boom"]), cfg)
    assert [x.event for x in s1] == [x.event for x in s2]  # content-hashed, repeatable
    flagged = [x for x in s1 if not x.audit]
    audits = [x for x in s1 if x.audit]
    assert len(flagged) == 10 and all(x.sampling_probability == 1.0 for x in flagged)
    assert 300 < len(audits) < 500 and all(x.sampling_probability == 0.2 for x in audits)


def suspect(sec: float, scope: str = "s", text: str = "ERROR x", audit: bool = False) -> Suspect:
    return Suspect(
        event=ev(int(sec), text, sec=sec),
        score=0.9,
        model_version="m",
        audit=audit,
        sampling_probability=0.01 if audit else 1.0,
        scope=scope,
    )


def test_windows_close_on_watermark_size_idle_and_end() -> None:
    now = [0.0]
    cfg = PipelineSettings(window_s=60, allowed_lateness_s=10, max_bundle_events=5, idle_close_s=30)
    c = WindowCollector(cfg, lambda: now[0])
    assert c.add(suspect(5)) == [] and c.add(suspect(50)) == []
    assert c.add(suspect(65)) == []  # the 0-60 window waits for late events until 70
    closed = c.add(suspect(71))
    assert [(w.reason, len(w.suspects)) for w in closed] == [("watermark", 2)]
    assert closed[0].suspects[0].event.ts < closed[0].suspects[1].event.ts
    late = c.add(suspect(30))  # its window closed: the event reopens it
    assert late == [] and c.open_events == 3
    for i in range(4):
        out = c.add(suspect(100 + i, scope="t"))
    assert out == [] and [w.reason for w in c.add(suspect(104, scope="t"))] == ["full"]
    now[0] = 31
    idle = c.close_idle()
    assert {(w.scope, w.reason) for w in idle} == {("s", "idle")}
    assert c.close_all() == [] and c.open_events == 0


def test_alert_book_revisions_and_resolution() -> None:
    async def go() -> None:
        book = AlertBook()
        cfg = PipelineSettings(window_s=60, allowed_lateness_s=0, alert_time="event")
        c = WindowCollector(cfg, lambda: 0.0)
        for i in range(12):
            c.add(
                Suspect(
                    event=Event(
                        ts=T0 + timedelta(seconds=i),
                        service="db",
                        level="ERROR",
                        message=f"ERROR db timeout {i}",
                        trace_id=f"t{i}",
                    ),
                    score=0.9,
                    model_version="m",
                    audit=False,
                    sampling_probability=1,
                    scope="s",
                )
            )
            c.add(
                Suspect(
                    event=Event(
                        ts=T0 + timedelta(seconds=i, milliseconds=5),
                        service="api",
                        level="ERROR",
                        message=f"ERROR db call failed {i}",
                        trace_id=f"t{i}",
                    ),
                    score=0.9,
                    model_version="m",
                    audit=False,
                    sampling_probability=1,
                    scope="s",
                )
            )
        (w,) = c.close_all()
        a1, fb, analysis = await analyse_window(w, HeuristicAnalyst(), book, cfg, datetime.now)
        assert [(a.status, a.revision) for a in a1] == [("firing", 1)]
        assert a1[0].generated_at == w.end  # event time: reproducible
        assert a1[0].report.root_causes[0].service == "db"
        assert {f.template for f in fb} == set(analysis.templates.values())
        a2, _, _ = await analyse_window(w, HeuristicAnalyst(), book, cfg, datetime.now)
        assert [(a.fingerprint, a.revision) for a in a2] == [(a1[0].fingerprint, 2)]
        quiet = WindowCollector(cfg, lambda: 0.0)
        quiet.add(
            Suspect(
                event=ev(1, "INFO all good", service="api", sec=120),
                score=0.1,
                model_version="m",
                audit=True,
                sampling_probability=0.01,
                scope="s",
            )
        )
        (qw,) = quiet.close_all()
        a3, fb3, _ = await analyse_window(qw, HeuristicAnalyst(), book, cfg, datetime.now)
        assert [(a.status, a.revision) for a in a3] == [("resolved", 3)]
        assert [(f.source, f.weight, f.label) for f in fb3] == [("heuristic", 100.0, False)]

    asyncio.run(go())


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
    assert 0 < result.suspects < result.events * 0.05
    high = [a for a in result.alerts if a.report.severity in ("critical", "high")]
    assert high and all(a.report.root_causes[0].service == "ts-contacts-service" for a in high)
    assert all(isinstance(a, Alert) for a in result.alerts)
