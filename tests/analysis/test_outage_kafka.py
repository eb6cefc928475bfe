"""The broker goes away for 20 s under a steady produce rate and comes back on the same data.

A broker of the test's own (deploy/local/kafka on a free port), so the shared one stays up.
The worker and `sluice produce` must resume without a restart, every event must reach
`suspects` (audit rate 1: each event is forwarded, so each is checkable), and the connection
errors of the outage must be logged at a bounded rate, not once per retry.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, TopicPartition

from sluice.stream.records import Alert, DeadLetter, Feedback, Outcome
from sluice.stream.testing import FakeLLM
from tests.support.kafka import (
    KafkaEnv,
    LocalBroker,
    committed_offsets,
    free_port_pair,
    limit_record_bytes,
    numbered_events,
    payment_failures,
    produce,
    producing_at,
    read_until,
    running_worker,
    sluice,
    suspect_messages_until,
    worker_env,
)

pytestmark = pytest.mark.integration

N = 600
RATE = 20  # records/s: the 30 s of producing straddle the 20 s outage
OUTAGE_S = 20


@pytest.fixture
def broker(kafka_bootstrap: str) -> Iterator[LocalBroker]:
    b = LocalBroker(free_port_pair())
    b.start(fresh=True)
    try:
        yield b
    finally:
        b.remove()


def test_broker_outage_loses_nothing_and_logs_at_a_bounded_rate(
    broker: LocalBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    env = worker_env(
        broker.bootstrap,
        unique_name,
        tmp_path,
        SLUICE_PIPELINE__AUDIT_RATE="1",
        SLUICE_KAFKA__PARTITIONS="2",
    )
    data = tmp_path / "events.jsonl"
    expected = numbered_events(data, N)
    sluice(env, "topics", "create")
    produce_log, worker_log = tmp_path / "produce.log", tmp_path / "worker.log"
    with (
        running_worker(env, worker_log),
        producing_at(env, data, RATE, produce_log) as produced,
    ):
        # the worker is running (not starting: Faust cannot start without a broker) once its
        # first suspects are out; a fixed sleep was not enough on a loaded machine
        read_until(broker.bootstrap, env["SLUICE_TOPICS__SUSPECTS"], lambda v: len(v) >= 1, 90,
                   lambda: worker_log.read_text(errors="replace")[-4000:])  # fmt: skip
        broker.stop()
        time.sleep(OUTAGE_S)
        broker.start()
        produced()
        got = suspect_messages_until(broker.bootstrap, env, expected, worker_log)
    assert got == expected
    worker_lines = (tmp_path / "worker.log").read_text(errors="replace").splitlines()
    produce_lines = produce_log.read_text(errors="replace").splitlines()
    # 20 s of outage: a line per kind and interval, with a count, not a line per retry
    for lines in (worker_lines, produce_lines):
        errors = [x for x in lines if "ERROR" in x or "WARNING" in x]
        assert len(errors) < 80, "\n".join(errors[-60:])
    assert any("more like this" in x for x in worker_lines), "\n".join(worker_lines[-60:])


def test_llm_outage_degraded_at_once_then_every_window_by_the_llm_once(
    kafka_bootstrap: str,
    tmp_path: Path,
    llm: FakeLLM,
    kafka_env: KafkaEnv,
) -> None:
    """The LLM test server fails every call for 35 s: degraded alerts come at once; after the
    recovery every window is analysed by the LLM; feedback is written once per window."""
    env = kafka_env(
        create=False,
        SLUICE_LLM__BASE_URL=llm.base_url,
        SLUICE_LLM__MAX_RETRIES="1",
        SLUICE_LLM__BACKOFF_MAX_S="1",
        SLUICE_LLM__BREAKER_RESET_S="5",
        SLUICE_PIPELINE__IDLE_CLOSE_S="2",
        SLUICE_PIPELINE__RETRY_AFTER_S="5",
        SLUICE_PIPELINE__RETRY_MAX_S="10",
        SLUICE_PIPELINE__DEGRADED_RETRIES="20",
    )
    scopes = ("shop", "bank")
    events = [
        json.dumps(
            {
                "ts": f"2024-05-01T10:00:{i:02d}Z",
                "service": f"ts-{scope}-service",
                "level": "ERROR",
                "scope": scope,
                "message": f"ERROR {scope} request {i} failed: upstream timeout",
            }
        ).encode()
        for scope in scopes
        for i in range(20)
    ]
    llm.down_until = time.monotonic() + 35
    started = time.monotonic()
    with running_worker(env, tmp_path / "worker.log"):
        produce(kafka_bootstrap, env["SLUICE_TOPICS__EVENTS"], events)
        log = lambda: (tmp_path / "worker.log").read_text(errors="replace")[-4000:]  # noqa: E731

        def analysed_by(values: list[bytes], kind: str) -> set[str]:
            alerts = [Alert.model_validate_json(v) for v in values]
            return {a.report.scope for a in alerts if a.provenance.analysis == kind}

        alerts_topic = env["SLUICE_TOPICS__ALERTS"]
        read_until(
            kafka_bootstrap, alerts_topic, lambda v: analysed_by(v, "degraded") >= set(scopes),
            45, log,
        )  # fmt: skip
        degraded_after = time.monotonic() - started
        values = read_until(
            kafka_bootstrap, alerts_topic, lambda v: analysed_by(v, "llm") >= set(scopes), 150, log
        )
        outcomes = read_until(
            kafka_bootstrap, env["SLUICE_TOPICS__OUTCOMES"], lambda v: len(v) >= 2, 30, log
        )
        time.sleep(3)  # anything duplicated would arrive now
        feedback = read_until(
            kafka_bootstrap, env["SLUICE_TOPICS__FEEDBACK"], lambda v: len(v) >= 2, 30, log
        )
        outcomes = read_until(
            kafka_bootstrap, env["SLUICE_TOPICS__OUTCOMES"], lambda v: len(v) >= 2, 30, log
        )
    assert degraded_after < 33  # at once: not after the outage
    llm_alerts = [
        a for a in map(Alert.model_validate_json, values) if a.provenance.analysis == "llm"
    ]
    assert min(a.generated_at for a in llm_alerts).timestamp() >= started + 34
    # one window per scope: its degraded alert once, not once per retry during the minute
    every = [Alert.model_validate_json(v) for v in values]
    degraded = Counter(a.report.scope for a in every if a.provenance.analysis == "degraded")
    assert degraded == Counter(scopes), degraded
    fb = [Feedback.model_validate_json(v) for v in feedback]
    assert {f.scope for f in fb} == set(scopes) and all(f.source == "llm" for f in fb)
    keys = [(f.scope, f.template) for f in fb]
    assert len(keys) == len(set(keys)), "feedback duplicated"
    got = [Outcome.model_validate_json(v) for v in outcomes]
    assert sorted(o.scope for o in got) == sorted(scopes)  # one final outcome per window
    assert all(o.analysis == "llm" for o in got)


def test_a_failing_dead_letter_producer_holds_the_offset_until_it_delivers(
    kafka_bootstrap: str, tmp_path: Path, kafka_env: KafkaEnv
) -> None:
    """The broker refuses the dead letters (the topic's records may not exceed 64 bytes): the
    record is not acknowledged, the offset stays; once the broker takes them, they arrive."""
    env = kafka_env(SLUICE_KAFKA__PARTITIONS="1")
    dead_topic, events = env["SLUICE_TOPICS__DEADLETTER"], env["SLUICE_TOPICS__EVENTS"]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    group = env["SLUICE_KAFKA__GROUP_ID"]

    def limit(size: int) -> None:
        limit_record_bytes(admin, dead_topic, size)

    def committed() -> int:
        tp = TopicPartition(events, 0)
        return committed_offsets(admin, group, [tp])[0]

    limit(64)
    good = json.dumps({"service": "pay", "message": "ERROR payment failed: refused"}).encode()
    with running_worker(env, tmp_path / "worker.log"):
        produce(kafka_bootstrap, events, [b'{"message": "truncated', good])
        log = lambda: (tmp_path / "worker.log").read_text(errors="replace")[-4000:]  # noqa: E731
        # the worker joins, reads, screens, and the broker refuses, again and again
        deadline = time.monotonic() + 90
        while (tmp_path / "worker.log").read_text().count("re-reading from the last commit") < 2:
            assert time.monotonic() < deadline, log()
            time.sleep(0.5)
        assert committed() == 0, log()
        limit(1 << 20)
        dead = read_until(kafka_bootstrap, dead_topic, lambda v: len(v) >= 1, 60, log)
        deadline = time.monotonic() + 30
        while committed() != 2:
            assert time.monotonic() < deadline, (committed(), log())
            time.sleep(0.5)
    admin.close()
    (letter,) = {DeadLetter.model_validate_json(v).offset: v for v in dead}.keys()
    assert letter == 0


def test_a_refused_alert_is_retried_by_the_analysis_stage_not_dead_lettered(
    kafka_bootstrap: str, tmp_path: Path, kafka_env: KafkaEnv
) -> None:
    """The broker refuses alerts (64-byte records) while a window is published: the analysis
    stage keeps its record unacknowledged and retries; once the broker takes alerts, they
    arrive, and no dead letter says the analysis failed."""
    env = kafka_env(SLUICE_PIPELINE__IDLE_CLOSE_S="2")
    alerts_topic = env["SLUICE_TOPICS__ALERTS"]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)

    def limit(size: int) -> None:
        limit_record_bytes(admin, alerts_topic, size)

    limit(64)
    lines = payment_failures(10)
    with running_worker(env, tmp_path / "worker.log"):
        produce(kafka_bootstrap, env["SLUICE_TOPICS__EVENTS"], lines, key=b"pay")
        log = lambda: (tmp_path / "worker.log").read_text(errors="replace")  # noqa: E731
        deadline = time.monotonic() + 60
        while "publishing for" not in log():  # the refusal was seen, and is being retried
            assert time.monotonic() < deadline, log()[-4000:]
            time.sleep(0.5)
        limit(1 << 20)
        alerts = read_until(kafka_bootstrap, alerts_topic, lambda v: len(v) >= 1, 90, log)
        time.sleep(2)
        dead = read_until(kafka_bootstrap, env["SLUICE_TOPICS__DEADLETTER"], lambda v: True, 5, log)
    admin.close()
    assert Alert.model_validate_json(alerts[0]).report.root_causes[0].service == "ts-pay-service"
    assert not [d for d in dead if b"analysis stage failed" in d]
