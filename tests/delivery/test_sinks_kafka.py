"""Sinks on the real broker: every sink, each against a local receiver that fails its first three
calls, delivers exactly the revisions of an incident (trigger, update, resolve), in order; a
record that is no alert and a receiver that refuses end as dead letters naming the sink; the
sink's offsets are committed only once each record is delivered or dead-lettered."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import pytest
from kafka import KafkaAdminClient, TopicPartition

from sluice.stream import Settings
from sluice.stream.delivery.sinks import sink_group, verify_signature
from sluice.stream.records import DeadLetter
from tests.support.kafka import (
    KafkaEnv,
    SettingsFor,
    committed_offsets,
    produce,
    read_until,
)
from tests.support.sinks import Receiver, alert, run_sinks

pytestmark = pytest.mark.integration

REVISIONS = [alert(0), alert(1, severity="critical"), alert(2, "resolved")]
NOT_AN_ALERT = b'{"schema_version": 1, "kind": "alert"}'


@pytest.fixture
def sink_env(kafka_env: KafkaEnv, settings_for: SettingsFor) -> tuple[dict[str, str], Settings]:
    """Unique topics (created) and fast retries: the environment and its settings."""
    env = kafka_env(
        SLUICE_KAFKA__PARTITIONS="1",
        SLUICE_SINKS__BACKOFF_BASE_S="0.05", SLUICE_SINKS__BACKOFF_MAX_S="0.2",
        SLUICE_SINKS__MAX_ATTEMPTS="5", SLUICE_SINKS__WEBHOOK_HMAC_KEY="hmac-key",
        SLUICE_SINKS__PAGERDUTY_ROUTING_KEY="routing-key",
    )  # fmt: skip
    return env, settings_for(env)


def test_every_sink_delivers_each_revision_once_through_three_failures(
    kafka_bootstrap: str, sink_env: tuple[dict[str, str], Settings]
) -> None:
    _env, settings = sink_env
    alerts_topic = settings.topics.alerts
    produce(kafka_bootstrap, alerts_topic, [a.to_bytes() for a in REVISIONS[:1]])
    produce(kafka_bootstrap, alerts_topic, [NOT_AN_ALERT])
    produce(kafka_bootstrap, alerts_topic, [a.to_bytes() for a in REVISIONS[1:]])
    names = ("slack", "pagerduty", "alertmanager", "webhook")
    receivers = {n: Receiver(fail_first=3, fail_status=503) for n in names}

    runners = asyncio.run(
        run_sinks(
            settings,
            receivers,
            lambda rs: (
                all(len(r.accepted) == 3 for r in receivers.values())
                and all(r.dead == 1 for r in rs)
            ),
            60,
        )
    )
    for name, r in receivers.items():
        assert len(r.requests) == 6, name  # 3 refused, then each revision once
        assert len(r.accepted) == 3, name
    for runner in runners:
        assert (runner.delivered, runner.retries, runner.dead) == (3, 3, 1)

    pd = [json.loads(b) for _p, _h, b in receivers["pagerduty"].accepted]
    assert [e["event_action"] for e in pd] == ["trigger", "trigger", "resolve"]
    assert {e["dedup_key"] for e in pd} == {REVISIONS[0].fingerprint}
    assert pd[1]["payload"]["severity"] == "critical"  # the revision updates the incident
    am = [json.loads(b)[0] for _p, _h, b in receivers["alertmanager"].accepted]
    assert am[2]["endsAt"] == "2024-06-01T08:03:00Z" and am[0]["endsAt"] > am[2]["endsAt"]
    slack = [json.loads(b)["text"] for _p, _h, b in receivers["slack"].accepted]
    assert [t.split("]")[0] for t in slack] == ["[HIGH · revision 0", "[CRITICAL · revision 1",
                                                "[RESOLVED"]  # fmt: skip
    for _path, headers, body in receivers["webhook"].accepted:
        ts = headers["X-Sluice-Timestamp"]
        assert verify_signature(b"hmac-key", ts, body, headers["X-Sluice-Signature"], int(ts))
    bodies = [json.loads(b)["revision"] for _p, _h, b in receivers["webhook"].accepted]
    assert bodies == [0, 1, 2]

    dead = [
        DeadLetter.model_validate_json(v)
        for v in read_until(kafka_bootstrap, settings.topics.deadletter, lambda v: len(v) >= 4, 30)
    ]
    assert sorted(d.reason.split(":")[0] for d in dead) == sorted(f"sink {n}" for n in names)
    assert {(d.offset, d.kind) for d in dead} == {(1, "sink_failed")}
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        for n in names:
            offsets = committed_offsets(
                admin, sink_group(settings, n), [TopicPartition(alerts_topic, 0)]
            )
            assert offsets == {0: 4}, n
    finally:
        admin.close()
    assert "SECRET" not in "".join(str(d.reason) for d in dead)


def test_a_refusing_receiver_dead_letters_at_once_and_the_sink_goes_on(
    kafka_bootstrap: str, sink_env: tuple[dict[str, str], Settings]
) -> None:
    """HTTP 400 will not change on a retry: one attempt, a dead letter with the sink and the
    status, and the next alert is delivered."""
    _env, settings = sink_env
    produce(kafka_bootstrap, settings.topics.alerts, [a.to_bytes() for a in REVISIONS[:2]])
    receiver = Receiver(fail_first=1, fail_status=400)

    (runner,) = asyncio.run(
        run_sinks(settings, {"webhook": receiver}, lambda _rs: len(receiver.accepted) == 1, 30)
    )
    assert (runner.delivered, runner.retries, runner.dead) == (1, 0, 1)
    assert json.loads(receiver.accepted[0][2])["revision"] == 1
    (letter,) = read_until(kafka_bootstrap, settings.topics.deadletter, lambda v: len(v) >= 1, 30)
    d = DeadLetter.model_validate_json(letter)
    assert d.reason.startswith("sink webhook failed after 1 attempts: sink webhook: HTTP 400")
    assert d.offset == 0


def test_sluice_sink_run_delivers_and_stops_on_sigterm(
    kafka_bootstrap: str, sink_env: tuple[dict[str, str], Settings]
) -> None:
    """The command line: `sluice sink run webhook` delivers, logs without the secret URL, and
    exits 0 on SIGTERM."""
    env, settings = sink_env
    produce(kafka_bootstrap, settings.topics.alerts, [REVISIONS[0].to_bytes()])
    receiver = Receiver()

    async def go() -> tuple[int, str]:
        base = await receiver.start()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sluice.stream", "--log-level", "info", "sink", "run", "webhook",
            env={**env, "SLUICE_SINKS__WEBHOOK_URL": base + "/hook/TOKEN-IN-PATH"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            async with asyncio.timeout(60):
                while not receiver.accepted:
                    await asyncio.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            await receiver.stop()
        return proc.returncode or 0, out.decode(errors="replace")

    code, output = asyncio.run(go())
    assert code == 0, output
    assert "delivered" in output and "1 delivered, 0 retries, 0 dead letters" in output, output
    assert "TOKEN-IN-PATH" not in output and "hmac-key" not in output
    (path, _headers, body) = receiver.accepted[0]
    assert path == "/hook/TOKEN-IN-PATH" and json.loads(body)["revision"] == 0
