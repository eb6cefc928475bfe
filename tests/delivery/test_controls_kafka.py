"""Acks and silences on the real broker, through the real command line: a running worker marks
the firing alert acknowledged, silenced and unsilenced (a revision each), and a PagerDuty sink
acknowledges, keeps quiet under the silence and resolves; a sink alone honours a silence it
reads from the controls topic."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sluice.stream.delivery.sinks import SinkRunner
from sluice.stream.records import Alert
from tests.support.kafka import (
    KafkaEnv,
    SettingsFor,
    fault_events,
    produce,
    read_until,
    running_worker,
    sluice,
)
from tests.support.sinks import Receiver, alert, run_sinks

pytestmark = pytest.mark.integration


def _alerts(values: list[bytes]) -> list[Alert]:
    return [Alert.model_validate_json(v) for v in values]


def test_ack_and_silence_reach_the_worker_and_the_sink(
    kafka_bootstrap: str,
    tmp_path: Path,
    kafka_env: KafkaEnv,
    settings_for: SettingsFor,
) -> None:
    env = kafka_env(SLUICE_PIPELINE__IDLE_CLOSE_S="2",
        SLUICE_PIPELINE__RESOLVE_AFTER_S="45", SLUICE_SINKS__PAGERDUTY_ROUTING_KEY="rk",
    )  # fmt: skip
    settings = settings_for(env)
    log = lambda: (tmp_path / "worker.log").read_text(errors="replace")[-4000:]  # noqa: E731
    topic = settings.topics.alerts

    def until(pred: Callable[[Alert], bool], timeout: float = 60) -> list[Alert]:
        values = read_until(kafka_bootstrap, topic, lambda vs: any(map(pred, _alerts(vs))),
                            timeout, log)  # fmt: skip
        return _alerts(values)

    with running_worker(env, tmp_path / "worker.log"):
        produce(kafka_bootstrap, settings.topics.events, fault_events(), key=b"pay")
        first = until(lambda a: a.status == "firing", 180)[0]
        fp = first.fingerprint
        out = sluice(env, "ack", fp, "--note", "failing over the db", "--by", "ana")
        assert f"acknowledged {fp} as ana" in out
        acked = next(a for a in until(lambda a: a.acknowledged is not None) if a.acknowledged)
        assert acked.acknowledged is not None
        assert (acked.acknowledged.by, acked.acknowledged.note) == ("ana", "failing over the db")

        assert "silenced ts-pay-service until" in sluice(
            env, "silence", "ts-pay-service", "--for", "1h", "--by", "bo"
        )
        until(lambda a: a.silenced_until is not None)
        assert "lifted" in sluice(env, "silence", "ts-pay-service", "--for", "0s")
        history = until(lambda a: a.status == "resolved", 120)
        listed = sluice(env, "controls")

    assert [a.revision for a in history] == list(range(1, len(history) + 1))
    assert {a.fingerprint for a in history} == {fp}
    silenced = [a for a in history if a.silenced_until is not None]
    assert silenced, [a.revision for a in history]
    after = history[history.index(silenced[-1]) + 1]
    assert after.silenced_until is None and after.acknowledged == acked.acknowledged  # unsilenced
    assert history[-1].status == "resolved"
    assert f"ack      {fp}" in listed and "by ana  (failing over the db)" in listed
    assert "silence " not in listed  # lifted

    receivers = {"pagerduty": Receiver(fail_first=1)}
    expected = [
        "resolve" if a.status == "resolved" else "acknowledge" if a.acknowledged else "trigger"
        for a in history
        if a.status == "resolved" or a.silenced_until is None  # silenced revisions are not sent
    ]

    def done(rs: list[SinkRunner]) -> bool:
        return rs[0].delivered + rs[0].silenced >= len(history)

    (runner,) = asyncio.run(run_sinks(settings, receivers, done, 60))
    sent = [json.loads(b)["event_action"] for _p, _h, b in receivers["pagerduty"].accepted]
    assert sent == expected and runner.silenced == len(silenced)
    assert "acknowledge" in sent and sent[0] == "trigger" and sent[-1] == "resolve"


def test_a_sink_honours_a_silence_it_reads_from_the_controls_topic(
    kafka_bootstrap: str,
    kafka_env: KafkaEnv,
    settings_for: SettingsFor,
) -> None:
    env = kafka_env(SLUICE_SINKS__WEBHOOK_HMAC_KEY="k")
    settings = settings_for(env)
    sluice(env, "silence", "shop", "--for", "2h", "--note", "maintenance")
    now = datetime.now(UTC)
    revisions = [alert(1).model_copy(update={"generated_at": now}), alert(2, "resolved")]
    produce(kafka_bootstrap, settings.topics.alerts, [a.to_bytes() for a in revisions])
    receivers = {"webhook": Receiver()}
    (runner,) = asyncio.run(
        run_sinks(settings, receivers, lambda rs: rs[0].delivered + rs[0].silenced >= 2, 60)
    )
    assert runner.silenced == 1
    assert [json.loads(b)["status"] for _p, _h, b in receivers["webhook"].accepted] == ["resolved"]
    assert "silence  shop  until" in sluice(env, "controls")
