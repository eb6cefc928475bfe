"""The pipeline end to end on the real broker: a `sluice worker` fed by `sluice produce`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sluice.models.training.datasets import shared_data_dir
from sluice.stream import PipelineSettings
from sluice.stream.records import Alert, DeadLetter, Feedback
from sluice.stream.settings import FirstSightSettings
from tests.support.hostile import check_event, corpus
from tests.support.kafka import (
    KafkaEnv,
    produce,
    read_until,
    running_worker,
    sluice,
    suspects_in,
)
from tests.support.pipeline import scan_demo

MIXED = Path(__file__).resolve().parent / "fixtures" / "server-mixed.log"

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "stream" / "demo" / "trainticket-contacts-fault.jsonl.gz"
NEZHA = shared_data_dir() / "nezha-trainticket"


def test_hostile_corpus_through_the_worker(
    kafka_bootstrap: str, tmp_path: Path, kafka_env: KafkaEnv
) -> None:
    """Every record of tests/corpus/ ends as a forwarded event or a dead letter with its reason,
    and the events after them are processed (no stuck partition)."""
    env = kafka_env(create=False, SLUICE_PIPELINE__AUDIT_RATE="1")
    hostile = corpus()  # audit rate 1: every event is forwarded, flagged or not
    good = [
        json.dumps(
            {
                "service": "pay",
                "level": "ERROR",
                "ts": f"2024-01-01T00:00:0{i}Z",
                "message": f"ERROR payment {i} failed: connection refused",
            }
        ).encode()
        for i in range(3)
    ]
    events = [h for h in hostile if not h.dead]
    with running_worker(env, tmp_path / "worker.log"):
        values = [*(h.raw for h in hostile), *good]
        produce(kafka_bootstrap, env["SLUICE_TOPICS__EVENTS"], values, key=b"pay")  # 1 partition
        log = lambda: (tmp_path / "worker.log").read_text(errors="replace")[-4000:]  # noqa: E731
        dead = read_until(
            kafka_bootstrap,
            env["SLUICE_TOPICS__DEADLETTER"],
            lambda v: len(v) >= len(hostile) - len(events),
            90,
            log,
        )
        suspects = read_until(
            kafka_bootstrap,
            env["SLUICE_TOPICS__SUSPECTS"],
            lambda v: len(suspects_in(v)) >= len(events) + len(good),
            60,
            log,
        )
    letters = {d.offset: d for d in map(DeadLetter.model_validate_json, dead)}
    sources = {s.event.source: s.event for s in suspects_in(suspects)}  # one partition: by offset
    forwarded = {int(str(src).rsplit(":", 1)[1]): e for src, e in sources.items()}
    assert len(forwarded) == len(events) + len(good) and len(letters) == len(dead)
    for offset, h in enumerate(hostile):
        if h.dead:
            d = letters[offset]
            assert h.expect["reason"] in d.reason and d.topic == env["SLUICE_TOPICS__EVENTS"]
            assert offset not in forwarded
        else:
            e = forwarded[offset]
            own = e.ts if e.ts and "time_from" not in e.attributes else None  # not the record's
            check_event(h, e.message, e.service if h.expect.get("service") else "pay",
                        own.isoformat() if own else None)  # fmt: skip
    # The events after the hostile ones were processed: flagged and forwarded.
    got = sorted(e.message for e in forwarded.values() if "refused" in e.message)
    assert got == sorted(json.loads(g)["message"] for g in good)


def _alerts(values: list[bytes]) -> list[Alert]:
    return [Alert.model_validate_json(v) for v in values]


def test_nezha_replay_raises_alerts_naming_the_injected_service(
    kafka_bootstrap: str, tmp_path: Path, kafka_env: KafkaEnv
) -> None:
    """Normal window 08:50, then the `return` fault on ts-contacts-service at 08:52:06 and the
    one on ts-basic-service at 09:12:56, replayed in time order with `sluice produce`."""
    env = kafka_env(create=False, SLUICE_PIPELINE__IDLE_CLOSE_S="4")
    files = [NEZHA / "normal-2023-01-29" / "08_50_log.csv.gz"] + [
        NEZHA / "2023-01-29" / f"{m}_log.csv.gz" for m in ("08_52", "08_53", "09_12", "09_13")
    ]
    faults = {
        "ts-contacts-service": datetime(2023, 1, 29, 8, 52, 6, tzinfo=UTC),
        "ts-basic-service": datetime(2023, 1, 29, 9, 12, 56, tzinfo=UTC),
    }
    with running_worker(env, tmp_path / "worker.log"):
        for f in files:
            sluice(env, "produce", str(f))

        def named(alerts: list[Alert], service: str, at: datetime) -> bool:
            return any(
                a.report.first_seen
                and a.report.last_seen
                and a.report.first_seen.timestamp() - 180
                <= at.timestamp()
                <= a.report.last_seen.timestamp() + 60
                and service in [s.service for s in a.report.affected_services[:3]]
                for a in alerts
            )

        def done(values: list[bytes]) -> bool:
            al = _alerts(values)
            return all(named(al, s, t) for s, t in faults.items())

        log = lambda: (tmp_path / "worker.log").read_text(errors="replace")[-4000:]  # noqa: E731
        values = read_until(kafka_bootstrap, env["SLUICE_TOPICS__ALERTS"], done, 150, log)
        feedback = read_until(
            kafka_bootstrap, env["SLUICE_TOPICS__FEEDBACK"], lambda v: len(v) > 0, 30, log
        )
    alerts = _alerts(values)
    normal_end = datetime(2023, 1, 29, 8, 51, 0, tzinfo=UTC)
    normal = [a for a in alerts if a.report.last_seen and a.report.last_seen < normal_end]
    assert all(a.report.severity != "critical" for a in normal), [a.report.title for a in normal]
    for service, at in faults.items():
        assert named(alerts, service, at), service
    fb = [Feedback.model_validate_json(v) for v in feedback]
    assert all(f.source == "heuristic" for f in fb) and {f.label for f in fb} == {True, False}


def _comparable(a: Alert) -> tuple[str, int, str, str]:
    return a.fingerprint, a.revision, a.status, a.report.model_dump_json()


def test_scan_and_worker_produce_the_same_alerts(
    kafka_bootstrap: str, tmp_path: Path, kafka_env: KafkaEnv
) -> None:
    """Same filter, same analyst, alert time fixed to event time; windows close when idle.

    First sight forwards a template's first sightings: which ones depends on the order events
    arrive in and on the budget's clock, so the worker reads one partition (the file's order)
    and the budget does not bind."""
    pipeline = {
        "SLUICE_PIPELINE__ALERT_TIME": "event",
        "SLUICE_PIPELINE__ALLOWED_LATENESS_S": "86400",
        "SLUICE_PIPELINE__IDLE_CLOSE_S": "5",
        "SLUICE_PIPELINE__FIRST_SIGHT__BUDGET_PER_MIN": "1000000000",
        "SLUICE_KAFKA__PARTITIONS": "1",
    }
    cfg = PipelineSettings(
        alert_time="event",
        allowed_lateness_s=86400,
        idle_close_s=5,
        first_sight=FirstSightSettings(budget_per_min=1e9),
    )
    offline = scan_demo(cfg)
    assert offline.alerts
    env = kafka_env(create=False, **pipeline)
    with running_worker(env, tmp_path / "worker.log"):
        out = sluice(env, "produce", str(DEMO))
        assert "produced 6306 records" in out
        log = lambda: (tmp_path / "worker.log").read_text(errors="replace")[-4000:]  # noqa: E731
        values = read_until(
            kafka_bootstrap,
            env["SLUICE_TOPICS__ALERTS"],
            lambda v: len(v) >= len(offline.alerts),
            120,
            log,
        )
    online = _alerts(values)
    assert sorted(map(_comparable, online)) == sorted(map(_comparable, offline.alerts))
    # a healthy worker's log says nothing is wrong: no ERROR (Faust's leader topic, found a
    # moment after aiokafka first asked for it) and no client complaint about its own settings
    said = (tmp_path / "worker.log").read_text(errors="replace")
    assert " ERROR " not in said and "CRITICAL" not in said, said[-4000:]
    assert "group_id is None" not in said


def test_plain_text_syslog_through_the_worker_gets_its_program_and_its_own_time(
    kafka_bootstrap: str, tmp_path: Path, kafka_env: KafkaEnv
) -> None:
    """sshd's syslog lines with no key: the worker finds the format from the topic's first
    lines; each suspect names the program as its service and carries the line's own time (its
    year from the record's timestamp), and its message has no date, host or pid."""
    env = kafka_env(create=False, SLUICE_PIPELINE__AUDIT_RATE="1", SLUICE_KAFKA__PARTITIONS="1",
    )  # fmt: skip
    hosts = ("LabSZ", "gw-2")
    lines = [
        f"Dec {10 + i % 3} 06:55:{i:02d} {hosts[i % 2]} sshd[{24200 + i}]: "
        f"Failed password for invalid user admin{i} from 173.234.31.{i} port 38926 ssh2"
        for i in range(24)
    ]
    with running_worker(env, tmp_path / "worker.log"):
        produce(kafka_bootstrap, env["SLUICE_TOPICS__EVENTS"], [x.encode() for x in lines])
        log = lambda: (tmp_path / "worker.log").read_text(errors="replace")[-4000:]  # noqa: E731
        values = read_until(
            kafka_bootstrap, env["SLUICE_TOPICS__SUSPECTS"],
            lambda v: len(suspects_in(v)) >= len(lines), 90, log,
        )  # fmt: skip
    got = {int(str(s.event.source).rsplit(":", 1)[1]): s.event for s in suspects_in(values)}
    year = datetime.now(UTC).year
    for offset, line in enumerate(lines):
        e = got[offset]
        assert e.service == "sshd", line
        assert e.host == hosts[offset % 2]
        assert e.attributes["pid"] == str(24200 + offset)
        want = datetime(year, 12, 10 + offset % 3, 6, 55, offset, tzinfo=UTC)
        if want.timestamp() > datetime.now(UTC).timestamp() + 7 * 86400:
            want = want.replace(year=year - 1)  # December seen from earlier in the year
        assert e.ts == want, (line, e.ts)
        assert e.message.startswith("sshd: Failed password for invalid user admin")
        assert "Dec" not in e.message and "LabSZ" not in e.message


def test_a_mixed_server_log_through_the_worker_reads_each_line_and_joins_each_trace(
    kafka_bootstrap: str, tmp_path: Path, kafka_env: KafkaEnv
) -> None:
    """The newcomer's file on a topic (one record per line, as a line shipper sends it): each
    line in its own format, each stack trace one suspect, as `scan` reads the file."""
    env = kafka_env(SLUICE_PIPELINE__AUDIT_RATE="1", SLUICE_KAFKA__PARTITIONS="1")
    lines = [x for x in MIXED.read_bytes().split(b"\n") if x.strip()]
    produce(kafka_bootstrap, env["SLUICE_TOPICS__EVENTS"], lines)  # before: one fetched batch
    with running_worker(env, tmp_path / "worker.log"):
        log = lambda: (tmp_path / "worker.log").read_text(errors="replace")[-4000:]  # noqa: E731
        values = read_until(
            kafka_bootstrap, env["SLUICE_TOPICS__SUSPECTS"],
            lambda v: len(suspects_in(v)) >= 26, 90, log,
        )  # fmt: skip
    events = [s.event for s in suspects_in(values)]
    assert len(events) == 26  # 39 records, 13 of them continuing a trace
    assert {"sshd", "systemd", "kernel", "nginx", "postgres"} <= {e.service for e in events}
    traces = [e for e in events if "Traceback" in e.message or "\tat com.example" in e.message]
    assert len(traces) == 2 and all(e.level == "ERROR" for e in traces)
    assert not [e for e in events if e.message.lstrip().startswith(("at ", "File "))]
