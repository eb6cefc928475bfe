"""A worker of the filter stage alone and a worker of the analysis stage alone (`worker.stages`)
make the pipeline together: events in, alerts out; each answers /healthz and /metrics for its
own stage, and stops cleanly on SIGTERM."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.stream.records import Alert
from tests.support.kafka import (
    KafkaEnv,
    free_port,
    http_get,
    payment_failures,
    produce,
    read_until,
    running_worker,
    wait_for_status,
)

pytestmark = pytest.mark.integration


def test_a_filter_worker_and_an_analysis_worker_alert_together(
    kafka_bootstrap: str, tmp_path: Path, kafka_env: KafkaEnv
) -> None:
    env = kafka_env(SLUICE_PIPELINE__IDLE_CLOSE_S="2")
    ports = {"filter": free_port(), "analysis": free_port()}
    envs = {
        stage: {**env, "SLUICE_WORKER__STAGES": stage, "SLUICE_WORKER__WEB_PORT": str(port),
                "SLUICE_WORKER__DATA_DIR": str(tmp_path / stage)}
        for stage, port in ports.items()
    }  # fmt: skip
    logs = {stage: tmp_path / f"{stage}.log" for stage in ports}

    def log() -> str:
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in logs.values())

    def healthy(stage: str) -> str:
        return wait_for_status(ports[stage], "/healthz", 200, 60, log)

    with (
        running_worker(envs["filter"], logs["filter"]) as filtering,
        running_worker(envs["analysis"], logs["analysis"]) as analysing,
    ):
        produce(kafka_bootstrap, env["SLUICE_TOPICS__EVENTS"], payment_failures(10), key=b"pay")
        alerts = read_until(
            kafka_bootstrap, env["SLUICE_TOPICS__ALERTS"], lambda v: len(v) >= 1, 90, log
        )
        assert healthy("filter").startswith("ok: lag ") and "analysis" not in healthy("filter")
        assert healthy("analysis").startswith("ok: analysis lag ")
        metrics = {stage: http_get(port, "/metrics")[1] for stage, port in ports.items()}
        assert "sluice_consumer_lag{" in metrics["filter"]
        assert "sluice_analysis_lag" not in metrics["filter"]
        assert "sluice_analysis_lag{" in metrics["analysis"]
        assert "sluice_consumer_lag" not in metrics["analysis"]
        assert http_get(ports["filter"], "/readyz")[0] == 200
        assert http_get(ports["analysis"], "/readyz")[0] == 200
    assert Alert.model_validate_json(alerts[0]).report.root_causes[0].service == "ts-pay-service"
    assert (filtering.returncode, analysing.returncode) == (0, 0), log()
    assert "filter stage alone" in logs["filter"].read_text()
    assert "Traceback" not in log()
