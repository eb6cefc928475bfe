"""A worker's /metrics, /healthz and /readyz on the real broker.

The counters must move by exactly what was produced (records in = parsed + dead-lettered;
flagged + unflagged = parsed; forwarded = what reached `suspects`), and liveness must mean
progress: a worker whose filter stage has lag and cannot commit (the broker refuses its
suspects), or whose analysis stage handles nothing while suspects wait (the broker refuses its
alerts), fails /healthz, and passes again once it catches up.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from sluice.stream.records import Alert
from tests.support.kafka import (
    KafkaEnv,
    free_port,
    http_get,
    limit_record_bytes,
    produce,
    read_until,
    running_worker,
    suspects_in,
    wait_for_status,
)

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(port: int) -> Samples:
    status, text = http_get(port, "/metrics")
    if status != 200:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _total(samples: Samples, name: str) -> float:
    """The sum of a metric over its labels."""
    return sum(v for (n, _labels), v in samples.items() if n == name)


def _wait_for(
    port: int, done: Callable[[Samples], bool], timeout: float, log: Callable[[], str]
) -> Samples:
    deadline = time.monotonic() + timeout
    samples: Samples = {}
    while not done(samples):
        assert time.monotonic() < deadline, (sorted(samples.items()), log()[-3000:])
        time.sleep(0.5)
        samples = _scrape(port)
    return samples


def _events(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        error = i % 10 == 0
        out.append(
            json.dumps(
                {
                    "ts": f"2024-06-01T08:{i // 60:02d}:{i % 60:02d}Z",
                    "service": "ts-pay-service" if error else "ts-cart-service",
                    "level": "ERROR" if error else "INFO",
                    "message": f"ERROR payment {i} failed: connection refused"
                    if error
                    else f"cart {i} checked out in 12 ms",
                }
            ).encode()
        )
    return out


def test_metrics_count_every_record_once(
    kafka_bootstrap: str, tmp_path: Path, kafka_env: KafkaEnv
) -> None:
    env = kafka_env(SLUICE_WORKER__WEB_PORT=str(free_port()),
        SLUICE_PIPELINE__IDLE_CLOSE_S="2",
    )  # fmt: skip
    port = int(env["SLUICE_WORKER__WEB_PORT"])
    good = _events(300)
    bad = [b'{"service": "pay", "message": "trunc', b'{"oops": 1', b"   ", b'{"level": "INFO"}']
    log = lambda: (tmp_path / "worker.log").read_text(errors="replace")  # noqa: E731
    with running_worker(env, tmp_path / "worker.log"):
        ready = time.monotonic() + 60
        while http_get(port, "/readyz")[0] != 200:
            assert time.monotonic() < ready, (http_get(port, "/readyz"), log()[-3000:])
            time.sleep(0.5)
        produce(kafka_bootstrap, env["SLUICE_TOPICS__EVENTS"], good + bad)
        n = len(good) + len(bad)
        m = _wait_for(port, lambda s: _total(s, "sluice_events_consumed_total") >= n, 60, log)
        parsed = _total(m, "sluice_events_parsed_total")
        dead = _total(m, "sluice_events_dead_lettered_total")
        flagged = _total(m, "sluice_events_flagged_total")
        assert _total(m, "sluice_events_consumed_total") == n
        assert (parsed, dead) == (len(good), len(bad))
        assert m[("sluice_events_dead_lettered_total", (("reason", "invalid_json"),))] == 2
        assert m[("sluice_events_dead_lettered_total", (("reason", "empty"),))] == 1
        assert m[("sluice_events_dead_lettered_total", (("reason", "no_message"),))] == 1
        assert flagged + _total(m, "sluice_events_unflagged_total") == parsed
        assert flagged >= 30  # every ERROR line
        forwarded = int(flagged + _total(m, "sluice_events_audit_sampled_total"))
        topic = env["SLUICE_TOPICS__SUSPECTS"]
        values = read_until(kafka_bootstrap, topic, lambda v: len(suspects_in(v)) >= forwarded,
                            60, log)  # fmt: skip
        assert len(suspects_in(values)) == forwarded
        lag = {labels: v for (name, labels), v in m.items() if name == "sluice_consumer_lag"}
        events_lag = [ls for ls in lag if ("topic", env["SLUICE_TOPICS__EVENTS"]) in ls]
        assert len(events_lag) == 2, m  # both partitions of the events topic are this worker's
        assert len(lag) == 2 * 4  # and of the collector's three topics (two partitions each)

        # The analysis stage: the windows close on idle, are analysed, and alert.
        alerts = read_until(
            kafka_bootstrap, env["SLUICE_TOPICS__ALERTS"], lambda v: len(v) >= 1, 60, log
        )
        m = _wait_for(
            port,
            lambda s: (
                _total(s, "sluice_alerts_published_total") >= len(alerts)
                and _total(s, "sluice_analysis_windows_analysed_total") >= 1
            ),
            60,
            log,
        )
        severity = Alert.model_validate_json(alerts[0]).report.severity
        assert m[("sluice_alerts_published_total", (("severity", severity),))] >= 1
        assert _total(m, "sluice_analysis_windows_opened_total") >= 1
        assert _total(m, "sluice_analysis_windows_closed_total") >= 1
        assert m[("sluice_analysis_windows_analysed_total", (("analysis", "heuristic"),))] >= 1
        assert _total(m, "sluice_filter_batch_seconds_count") >= 1
        m = _wait_for(port, lambda s: bool(s) and _total(s, "sluice_consumer_lag") == 0, 30, log)
        analysis_lag = [k for k in m if k[0] == "sluice_analysis_lag"]
        assert len(analysis_lag) == 2, m  # both partitions of suspects are this worker's
        status, text = http_get(port, "/healthz")
        assert status == 200 and text.startswith("ok: lag 0; analysis lag "), text


def test_liveness_fails_while_the_consumer_is_stalled_with_lag_and_recovers(
    kafka_bootstrap: str, tmp_path: Path, kafka_env: KafkaEnv
) -> None:
    """The broker refuses suspects (64-byte records): the filter stage reads, cannot deliver,
    commits nothing and reads again. With lag and no commit for 3 s, /healthz answers 503; once
    the broker takes suspects again, the stage commits and /healthz answers 200."""
    env = kafka_env(SLUICE_WORKER__WEB_PORT=str(free_port()),
        SLUICE_WORKER__STALL_TIMEOUT_S="3",
        SLUICE_PIPELINE__AUDIT_RATE="1",  # every event goes to suspects
        SLUICE_KAFKA__PARTITIONS="1",
    )  # fmt: skip
    port = int(env["SLUICE_WORKER__WEB_PORT"])
    suspects_topic = env["SLUICE_TOPICS__SUSPECTS"]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)

    def limit(size: int) -> None:
        limit_record_bytes(admin, suspects_topic, size)

    log = lambda: (tmp_path / "worker.log").read_text(errors="replace")  # noqa: E731

    def wait_health(status: int, timeout: float) -> str:
        return wait_for_status(port, "/healthz", status, timeout, log)

    limit(64)
    try:
        with running_worker(env, tmp_path / "worker.log"):
            wait_health(200, 60)  # alive with nothing to do
            produce(kafka_bootstrap, env["SLUICE_TOPICS__EVENTS"], _events(20))
            text = wait_health(503, 60)
            assert text.startswith("stalled: lag 20 and no commit for"), text
            m = _scrape(port)
            assert _total(m, "sluice_consumer_lag") == 20
            assert _total(m, "sluice_filter_stalled_seconds") >= 3
            assert http_get(port, "/readyz")[0] == 200  # ready and stalled are not the same
            limit(1 << 20)
            assert wait_health(200, 60).startswith("ok: lag 0; analysis lag ")
            read_until(
                kafka_bootstrap, suspects_topic, lambda v: len(suspects_in(v)) >= 20, 30, log
            )
    finally:
        admin.close()


def test_liveness_fails_while_the_analysis_stage_is_stuck_and_recovers(
    kafka_bootstrap: str, tmp_path: Path, kafka_env: KafkaEnv
) -> None:
    """The broker refuses alerts (64-byte records): the analysis stage retries its record and
    handles no other, while every worker's ticks keep arriving on suspects. With that lag and
    nothing handled for 3 s, /healthz answers 503 and names the analysis stage (the filter
    stage is fine); once the broker takes alerts, 200."""
    env = kafka_env(SLUICE_WORKER__WEB_PORT=str(free_port()),
        SLUICE_WORKER__STALL_TIMEOUT_S="3",
        SLUICE_PIPELINE__IDLE_CLOSE_S="2",
        SLUICE_KAFKA__PARTITIONS="1",
    )  # fmt: skip
    port = int(env["SLUICE_WORKER__WEB_PORT"])
    alerts_topic = env["SLUICE_TOPICS__ALERTS"]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    log = lambda: (tmp_path / "worker.log").read_text(errors="replace")  # noqa: E731

    def wait_health(status: int, timeout: float) -> str:
        return wait_for_status(port, "/healthz", status, timeout, log)

    limit_record_bytes(admin, alerts_topic, 64)
    try:
        with running_worker(env, tmp_path / "worker.log"):
            wait_health(200, 60)
            produce(kafka_bootstrap, env["SLUICE_TOPICS__EVENTS"], _events(20))
            text = wait_health(503, 90)
            assert text.startswith("stalled: analysis lag "), text
            m = _scrape(port)
            assert _total(m, "sluice_analysis_lag") >= 1
            assert _total(m, "sluice_analysis_stalled_seconds") >= 3
            assert _total(m, "sluice_filter_stalled_seconds") == 0
            limit_record_bytes(admin, alerts_topic, 1 << 20)
            assert wait_health(200, 60).startswith("ok: lag ")
            read_until(kafka_bootstrap, alerts_topic, lambda v: len(v) >= 1, 30, log)
    finally:
        admin.close()
