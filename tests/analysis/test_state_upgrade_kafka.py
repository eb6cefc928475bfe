"""A worker that finds state of a newer release in its changelog (a rolled-back upgrade) refuses
that scope's records with a dead letter naming both versions, and goes on with every other one:
no crash loop, nothing misread."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from sluice.stream.analysis import STATE_VERSION
from sluice.stream.kafka.topics import state_changelog_topic
from sluice.stream.records import Alert, DeadLetter, SuspectBatch
from tests.support.kafka import KafkaEnv, SettingsFor, read_until, running_worker
from tests.support.pipeline import suspect

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "changelog-v1.json"


def test_state_of_a_newer_release_is_dead_lettered_and_the_worker_goes_on(
    kafka_env: KafkaEnv, settings_for: SettingsFor, kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = kafka_env(SLUICE_KAFKA__PARTITIONS="1", SLUICE_PIPELINE__IDLE_CLOSE_S="2")
    settings = settings_for(env)
    # The v1 fixture's scope, as a release two versions on would have written it.
    scope = json.loads(json.loads(FIXTURE.read_text())["store"]["scope/default"])
    future = orjson.dumps({**scope, "v": STATE_VERSION + 1})
    batches = [
        SuspectBatch(scope="later", suspects=[suspect(1, "later"), suspect(2, "later")]),
        SuspectBatch(scope="today", suspects=[suspect(1, "today"), suspect(2, "today")]),
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        topic = state_changelog_topic(settings)
        producer.send(topic, key=b"scope/later", value=future, partition=0)
        for b in batches:  # one partition: the refused record comes first
            producer.send(env["SLUICE_TOPICS__SUSPECTS"], key=b.scope.encode(), value=b.to_bytes())
        producer.flush()
    finally:
        producer.close()

    log_path = tmp_path / "worker.log"
    log = lambda: log_path.read_text(errors="replace")[-3000:]  # noqa: E731
    with running_worker(env, log_path) as worker:
        dead = read_until(
            kafka_bootstrap, env["SLUICE_TOPICS__DEADLETTER"], lambda v: len(v) >= 1, 90, log
        )
        alerts = read_until(
            kafka_bootstrap,
            env["SLUICE_TOPICS__ALERTS"],
            lambda v: any(Alert.model_validate_json(a).report.scope == "today" for a in v),
            90,
            log,
        )
        assert worker.poll() is None, "the worker is still running"
    letter = DeadLetter.model_validate_json(dead[0])
    assert letter.reason == (
        f"analysis state written by a newer release (state version {STATE_VERSION + 1}; this "
        f"release reads up to {STATE_VERSION}): upgrade this worker"
    )
    assert SuspectBatch.model_validate_json(base64.b64decode(letter.value_b64)).scope == "later"
    assert all(Alert.model_validate_json(a).report.scope != "later" for a in alerts)
