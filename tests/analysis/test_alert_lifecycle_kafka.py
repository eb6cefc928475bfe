"""An incident's alert lifecycle end to end on the real broker: a fault replay through a real
worker (three minutes of a payment service refusing connections, its callers failing) raises
one firing alert, revised window by window; the quiet period resolves it; and every sink
(Slack, PagerDuty, Alertmanager, webhook), each against a receiver that fails its first three
calls, delivers exactly those revisions: one message or trigger per revision, one resolve."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sluice.stream.records import Alert
from tests.support.kafka import (
    KafkaEnv,
    SettingsFor,
    fault_events,
    produce,
    read_until,
    running_worker,
)
from tests.support.sinks import Receiver, run_sinks

pytestmark = pytest.mark.integration

T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)


def test_a_fault_replay_fires_one_alert_resolves_it_and_every_sink_gets_each_revision(
    kafka_bootstrap: str,
    tmp_path: Path,
    kafka_env: KafkaEnv,
    settings_for: SettingsFor,
) -> None:
    env = kafka_env(SLUICE_PIPELINE__IDLE_CLOSE_S="2",
        SLUICE_PIPELINE__RESOLVE_AFTER_S="10", SLUICE_SINKS__BACKOFF_BASE_S="0.05",
        SLUICE_SINKS__BACKOFF_MAX_S="0.2", SLUICE_SINKS__PAGERDUTY_ROUTING_KEY="rk",
        SLUICE_SINKS__WEBHOOK_HMAC_KEY="hmac-key", SLUICE_SINKS__ALERTMANAGER_HOLD_S="3600",
    )  # fmt: skip
    settings = settings_for(env)
    log = lambda: (tmp_path / "worker.log").read_text(errors="replace")[-4000:]  # noqa: E731
    names = ("slack", "pagerduty", "alertmanager", "webhook")
    receivers = {name: Receiver(fail_first=3) for name in names}

    def resolved(values: list[bytes]) -> bool:
        return any(Alert.model_validate_json(v).status == "resolved" for v in values)

    with running_worker(env, tmp_path / "worker.log"):
        produce(kafka_bootstrap, settings.topics.events, fault_events(), key=b"pay")
        # 180 s: the first test on a freshly started broker waits for its group coordinator
        values = read_until(kafka_bootstrap, settings.topics.alerts, resolved, 180, log)

        asyncio.run(
            run_sinks(
                settings,
                receivers,
                lambda _rs: all(len(r.accepted) >= len(values) for r in receivers.values()),
                60,
            )
        )

    alerts = [Alert.model_validate_json(v) for v in values]
    assert len({a.fingerprint for a in alerts}) == 1, [a.report.title for a in alerts]
    assert [a.status for a in alerts][-1] == "resolved"
    assert [a.status for a in alerts].count("resolved") == 1
    assert [a.revision for a in alerts] == list(range(1, len(alerts) + 1))  # no duplicate
    assert len(alerts) >= 3  # one firing revision per window at least, then the resolution
    assert alerts[0].report.root_causes[0].service == "ts-pay-service"
    pd = [json.loads(b) for _p, _h, b in receivers["pagerduty"].accepted]
    assert [e["event_action"] for e in pd] == ["trigger"] * (len(alerts) - 1) + ["resolve"]
    assert {e["dedup_key"] for e in pd} == {alerts[0].fingerprint}
    assert len(receivers["pagerduty"].requests) == len(alerts) + 3  # three refused, then each once
    hooks = [json.loads(b)["revision"] for _p, _h, b in receivers["webhook"].accepted]
    assert hooks == [a.revision for a in alerts]
    slack = [json.loads(b)["text"] for _p, _h, b in receivers["slack"].accepted]
    assert [t.startswith("[RESOLVED]") for t in slack] == [False] * (len(alerts) - 1) + [True]
    am = [json.loads(b)[0] for _p, _h, b in receivers["alertmanager"].accepted]
    assert [x["annotations"]["revision"] for x in am] == [str(a.revision) for a in alerts]
    assert {x["labels"]["fingerprint"] for x in am} == {alerts[0].fingerprint}
    assert am[-1]["endsAt"] < am[-2]["endsAt"]  # the resolution ends it now, not after the hold
    for name in names:  # three refused, then each revision exactly once
        assert len(receivers[name].requests) == len(alerts) + 3, name
