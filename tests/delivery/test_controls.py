"""Acks and silences without a broker: the duration parser, the Controls view, the analysis
state marking alerts (and publishing a revision when an ack or a silence changes them), the
sink payloads for an acknowledged alert, and a sink runner skipping what a silence covers."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.stream import PipelineSettings, Settings
from sluice.stream.analysis import AnalysisState, MemoryStore
from sluice.stream.delivery.controls import Controls, parse_duration
from sluice.stream.delivery.sinks import (
    RecordingSink,
    SinkRunner,
    alertmanager_alerts,
    pagerduty_event,
)
from sluice.stream.records import Ack, Alert, Silence, parse_control_record
from tests.support.pipeline import analyse_all, window_events
from tests.support.sinks import alert

T = datetime(2026, 1, 1, tzinfo=UTC)


@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from("dhms")), min_size=1, max_size=4))
def test_durations_parse_to_the_sum_of_their_parts(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{u}" for n, u in parts)
    unit = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    assert parse_duration(text) == timedelta(seconds=sum(n * unit[u] for n, u in parts))


@pytest.mark.parametrize("bad", ["", "2", "h", "2x", "2h 30m", "-1h", "1.5h", "999w"])
def test_anything_else_is_not_a_duration(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@given(st.text(max_size=40))
def test_the_duration_parser_only_raises_value_error(text: str) -> None:
    try:
        got = parse_duration(text)
    except ValueError:
        return
    assert timedelta(0) <= got <= timedelta(days=366)


def test_control_records_round_trip_and_key_by_what_they_replace() -> None:
    a = Ack(fingerprint="fp1", by="ana", note="on it", at=T)
    s = Silence(target="payment-service", until=T + timedelta(hours=2), by="bo", at=T)
    assert parse_control_record(a.to_bytes()) == a
    assert parse_control_record(s.to_bytes()) == s
    assert (a.key(), s.key()) == ("ack/fp1", "silence/payment-service")


def test_a_silence_covers_its_scope_or_any_service_the_alert_names_until_it_ends() -> None:
    a = alert(1)  # scope shop; payment-service the root cause, checkout impacted
    c = Controls()
    assert c.silence(a, T) is None
    c.apply(Silence(target="checkout", until=T + timedelta(hours=1), by="x", at=T))
    assert c.silence(a, T) is not None
    assert c.silence(a, T + timedelta(hours=1)) is None  # ended
    c.apply(Silence(target="checkout", until=T, by="x", at=T))  # lifted: the latest wins
    assert c.silence(a, T) is None
    c.apply(Silence(target="shop", until=T + timedelta(hours=2), by="x", at=T))
    assert c.silence(a, T + timedelta(hours=1)) is not None
    c.apply(Silence(target="inventory", until=T + timedelta(days=1), by="x", at=T))
    assert c.silence(a, T + timedelta(hours=3)) is None  # names no inventory


def test_an_ack_belongs_to_the_episode_it_was_given_in() -> None:
    c = Controls()
    c.apply(Ack(fingerprint="fp", by="ana", note="db failover", at=T))
    got = c.acknowledgement("fp", since=T - timedelta(minutes=5))
    assert got is not None and (got.by, got.note) == ("ana", "db failover")
    assert c.acknowledgement("fp", since=T + timedelta(minutes=5)) is None  # a later episode
    assert c.acknowledgement("other", since=T - timedelta(minutes=5)) is None


def test_the_worker_publishes_a_revision_when_an_alert_is_acked_silenced_and_unsilenced() -> None:
    async def go() -> None:
        wall = [1000.0]
        controls = Controls()
        cfg = PipelineSettings(window_s=60, allowed_lateness_s=0, resolve_after_s=3600)
        state = AnalysisState(cfg, MemoryStore(), lambda: wall[0], controls=controls)
        state.add("s", [s for i in range(12) for s in window_events(i)])
        state.close_all("s")
        (a1,), _ = await analyse_all(state, "s")
        assert (a1.revision, a1.acknowledged, a1.silenced_until) == (1, None, None)
        assert state.publish("s").alerts == []  # nothing changed: nothing published

        wall[0] = 1100.0
        at = datetime.fromtimestamp(1050.0, UTC)
        controls.apply(Ack(fingerprint=a1.fingerprint, by="ana", note="failing over", at=at))
        (a2,) = state.publish("s").alerts
        assert a2.revision == 2 and a2.status == "firing" and a2.report == a1.report
        assert a2.acknowledged is not None and a2.acknowledged.by == "ana"
        assert state.publish("s").alerts == []  # once

        until = datetime.fromtimestamp(1300.0, UTC)
        controls.apply(Silence(target="db", until=until, by="bo", at=at))
        (a3,) = state.publish("s").alerts
        assert (a3.revision, a3.silenced_until) == (3, until)
        assert a3.acknowledged == a2.acknowledged  # still acked
        state.add("s", [s for i in range(60, 72) for s in window_events(i)])
        state.close_all("s")
        (a4,), _ = await analyse_all(state, "s")  # a new window's revision keeps both marks
        assert (a4.revision, a4.silenced_until, a4.acknowledged) == (4, until, a2.acknowledged)

        wall[0] = 1300.0  # the silence ended
        (a5,) = state.publish("s").alerts
        assert (a5.revision, a5.silenced_until) == (5, None)
        assert a5.generated_at == datetime.fromtimestamp(1300.0, UTC)

        wall[0] = 1300.0 + 3600  # quiet: resolved, and the next episode is not acked
        (done,) = state.publish("s").alerts
        assert done.status == "resolved" and done.revision == 6
        state.add("s", [s for i in range(7200, 7212) for s in window_events(i)])
        state.close_all("s")
        (again,), _ = await analyse_all(state, "s")
        assert (again.fingerprint, again.status, again.acknowledged) == (
            a1.fingerprint,
            "firing",
            None,
        )

    asyncio.run(go())


def test_an_acknowledged_alert_acknowledges_at_pagerduty_and_says_who_in_alertmanager() -> None:
    from sluice.stream.records import Acknowledgement

    acked = alert(2).model_copy(update={"acknowledged": Acknowledgement(by="ana", at=T)})
    event = pagerduty_event(acked, "rk")
    assert event == {"routing_key": "rk", "event_action": "acknowledge",
                     "dedup_key": acked.fingerprint}  # fmt: skip
    resolved = acked.model_copy(update={"status": "resolved"})
    assert pagerduty_event(resolved, "rk")["event_action"] == "resolve"
    (am,) = alertmanager_alerts(acked, timedelta(minutes=5))
    assert am["annotations"]["acknowledged_by"] == "ana"
    assert (
        "acknowledged_by"
        not in alertmanager_alerts(alert(1), timedelta(minutes=5))[0]["annotations"]
    )


def test_a_sink_runner_skips_silenced_firing_revisions_but_delivers_resolutions() -> None:
    async def go() -> None:
        now = T
        sink = RecordingSink()
        runner = SinkRunner(Settings(), sink, wall=lambda: now)
        runner.controls.apply(Silence(target="shop", until=T + timedelta(hours=1), by="x", at=T))

        def msg(a: Alert) -> SimpleNamespace:
            return SimpleNamespace(topic="alerts", partition=0, offset=0, value=a.to_bytes())

        late = alert(1).model_copy(update={"silenced_until": T + timedelta(minutes=30)})
        for a in (alert(1), late, alert(2, "resolved")):
            await runner.handle(msg(a), producer=None)
        assert [a.status for a in sink.alerts] == ["resolved"]
        assert runner.silenced == 2
        now = T + timedelta(hours=2)  # both silences are over
        await runner.handle(msg(late), producer=None)
        assert len(sink.alerts) == 2

    asyncio.run(go())


def test_the_slack_message_of_an_acknowledged_alert_says_who_is_on_it() -> None:
    from sluice.stream.delivery.sinks import slack_message
    from sluice.stream.records import Acknowledgement

    acked = alert(2).model_copy(
        update={"acknowledged": Acknowledgement(by="ana", at=T, note="failing over")}
    )
    text = json.dumps(slack_message(acked))
    assert "Acknowledged by ana: failing over" in text
    assert "Acknowledged" not in json.dumps(slack_message(alert(2)))
