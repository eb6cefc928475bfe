"""Signals through real workers on the real broker: the rate and edge baselines a worker learns
live in the analysis state's changelog, survive a restart, and after it a service that goes
silent while its caller fails is named the root cause (a fresh baseline could not say so)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from sluice.stream import Settings
from sluice.stream.kafka.topics import read_topic, state_changelog_topic
from sluice.stream.records import Alert
from sluice.stream.signals.detector import SignalDetector
from sluice.stream.testing.telemetry import Fault, telemetry_records
from tests.support.kafka import (
    KafkaEnv,
    SettingsFor,
    produce,
    read_until,
    running_worker,
)

pytestmark = pytest.mark.integration

T0 = 1_717_228_800  # 2024-06-01 08:00 UTC, a minute boundary
FAULT = (T0 + 600, T0 + 660)


def _events(start: int, end: int) -> list[bytes]:
    """A shop, ten events a second: checkout calls db, cart calls cache. Within FAULT db logs
    nothing and web's checkouts fail."""
    out = []
    for t in range(start, end):
        fault = FAULT[0] <= t < FAULT[1]
        for i in range(2):
            trace = f"{t}-{i}"
            at = t + i * 0.5
            if fault:
                out.append(
                    {
                        "ts": at,
                        "service": "web",
                        "level": "ERROR",
                        "trace_id": trace,
                        "message": f"ERROR checkout {t}-{i} failed: timeout calling db",
                    }
                )
            else:
                out.append(
                    {
                        "ts": at,
                        "service": "web",
                        "level": "INFO",
                        "trace_id": trace,
                        "message": f"INFO checkout {t}-{i} ok",
                    }
                )
                out.append(
                    {
                        "ts": at + 0.01,
                        "service": "db",
                        "level": "INFO",
                        "trace_id": trace,
                        "message": f"INFO query {t}-{i} took 3 ms",
                    }
                )
            out.append(
                {
                    "ts": at + 0.2,
                    "service": "web",
                    "level": "INFO",
                    "trace_id": f"c{trace}",
                    "message": f"INFO cart {t}-{i} ok",
                }
            )
            out.append({"ts": at + 0.21, "service": "cache", "level": "INFO",
                        "trace_id": f"c{trace}", "message": f"INFO get {t}-{i} hit"})  # fmt: skip
    return [json.dumps({**x, "scope": "shop"}).encode() for x in out]


def _baseline_in_changelog(settings: Settings) -> dict[str, tuple[float, int]] | None:
    """The latest `signals/shop` state in the changelog (up to its end now): per service, its
    usual events per bucket and the buckets learned."""
    values = {m.key: m.value for m in read_topic(settings, state_changelog_topic(settings))}
    raw = values.get(b"signals/shop")
    return SignalDetector.load(raw).rates() if raw else None


def test_signal_baselines_survive_a_restart_and_name_the_silent_service(
    kafka_bootstrap: str,
    tmp_path: Path,
    kafka_env: KafkaEnv,
    settings_for: SettingsFor,
) -> None:
    env = kafka_env(SLUICE_KAFKA__PARTITIONS="1",
                     SLUICE_PIPELINE__SIGNALS__ENABLED="true", SLUICE_PIPELINE__IDLE_CLOSE_S="2",
                     SLUICE_PIPELINE__AUDIT_RATE="0")  # fmt: skip
    settings = settings_for(env)
    log = lambda: (tmp_path / "worker.log").read_text(errors="replace")[-4000:]  # noqa: E731

    with running_worker(env, tmp_path / "worker.log"):
        produce(kafka_bootstrap, settings.topics.events, _events(T0, FAULT[0]), key=b"shop")

        deadline = time.monotonic() + 120
        while True:  # until the baseline of db has the history a judgement needs
            rates = _baseline_in_changelog(settings)
            if rates and rates.get("db", (0.0, 0))[1] >= 12:
                break
            assert time.monotonic() < deadline, (rates, log())
            time.sleep(2)

    assert rates is not None and {"web", "db", "cache"} <= rates.keys()
    assert rates["db"][0] == pytest.approx(20.0)  # 20 db lines per 10-second bucket

    with running_worker(env, tmp_path / "worker2.log"):  # a new process: state from Kafka
        produce(kafka_bootstrap, settings.topics.events, _events(FAULT[0], FAULT[1] + 90),
                key=b"shop")  # fmt: skip
        values = read_until(kafka_bootstrap, settings.topics.alerts, lambda v: len(v) >= 1, 240,
                            lambda: (tmp_path / "worker2.log").read_text()[-4000:])  # fmt: skip

    alert = Alert.model_validate_json(values[0])
    assert alert.report.root_causes[0].service == "db", alert.report
    evidence = {a.service: a.evidence for a in alert.report.affected_services}
    assert evidence["db"].startswith("signal: db: log rate 0/min")


def _names_cart(values: list[bytes]) -> bool:
    alerts = [Alert.model_validate_json(v) for v in values]
    return any(a.report.root_causes and a.report.root_causes[0].service == "cart" for a in alerts)


def test_a_worker_names_the_callee_of_a_slow_edge_from_spans_alone(
    kafka_bootstrap: str,
    tmp_path: Path,
    kafka_env: KafkaEnv,
    settings_for: SettingsFor,
) -> None:
    """OTLP/JSON trace requests on `otlp_spans` and nothing else: 15 minutes of history, then a
    200 ms network delay into cart for two minutes. The filter stage folds the spans and
    forwards exemplars, which open the window; its signals name cart, with the edge's figures.
    Line signals stay off (the default)."""
    env = kafka_env(SLUICE_KAFKA__PARTITIONS="1", SLUICE_PIPELINE__IDLE_CLOSE_S="2")
    settings = settings_for(env)
    start = T0 + 15 * 60
    fault = Fault("network_delay", "cart", start, start + 120)
    spans = [
        raw
        for _t, raw in telemetry_records(T0, 19 * 60, [fault])
        if raw.startswith(b'{"resourceSpans"')
    ]
    log = tmp_path / "worker.log"
    with running_worker(env, log):
        produce(kafka_bootstrap, settings.topics.otlp_spans, spans)
        values = read_until(kafka_bootstrap, settings.topics.alerts, _names_cart, 120,
                            lambda: log.read_text(errors="replace")[-4000:])  # fmt: skip
    alerts = [Alert.model_validate_json(v) for v in values]
    named = [a for a in alerts if a.report.root_causes[0].service == "cart"]
    assert named[0].report.severity == "high" and named[0].report.is_incident
    evidence = named[0].report.affected_services[0].evidence
    assert "frontend -> cart: time outside cart" in evidence, evidence
    # nothing else was blamed before the fault: the history raised no alert above warning
    before = [a for a in alerts if a.report.last_seen and a.report.last_seen.timestamp() < start]
    assert not [a for a in before if a.report.severity in ("high", "critical")], before
