"""A rolling upgrade, worker by worker, against the real broker: two workers in one group share a
stream of events while one after the other is replaced by the next release, twice over:

    landed, landed -> this, landed -> this, this -> next, this -> next, next

`landed` is the release before this one, run from a `git archive` of its commit
(`tests.support.releases.LANDED`);
`next` is this release with an optional field added to what it writes on the suspects topic and
to alerts (`tests.support.next_release`). The instance ids stay (a StatefulSet's pods), so each
replacement takes its partitions back.

Each phase produces one window of event time per scope, to both events partitions, and waits for
its analysis. Asserted: nothing is dead-lettered; every window is analysed exactly once (one
outcome each); alerts continue through every phase; and where releases mix, each worker screens
events and analyses windows, so each release reads suspects the other wrote (every events
partition carries both scopes, and the scopes' suspects land on both suspects partitions); this
release counts the next release's added fields, and reads its alerts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer

from sluice.stream.records import Alert, Outcome, read_record
from tests.support.kafka import (
    ROOT,
    KafkaEnv,
    free_port,
    http_get,
    read_all,
    read_until,
    scopes_on_partitions,
)
from tests.support.next_release import FIELD

pytestmark = pytest.mark.integration

T0 = datetime(2024, 9, 1, 6, 0, tzinfo=UTC)
SCOPES = scopes_on_partitions(2)
PIPELINE = {
    "SLUICE_KAFKA__PARTITIONS": "2",
    "SLUICE_PIPELINE__ALERT_TIME": "event",
    "SLUICE_PIPELINE__IDLE_CLOSE_S": "3",
    "SLUICE_PIPELINE__BATCH_SIZE": "200",
}


@dataclass
class Worker:
    release: str
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples (with these labels) on the worker's /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        status, text = http_get(self.port, "/metrics")
        assert status == 200, (status, text[-500:], self.tail())
        return sum(
            s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def tail(self) -> str:
        return (
            f"--- {self.name} ({self.release}) ---\n" + self.log.read_text(errors="replace")[-2500:]
        )

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Group:
    env: dict[str, str]
    tmp: Path
    commands: dict[str, tuple[list[str], dict[str, str]]]
    #: per release, the settings it knows (None: all); a pod of a release sets only its own
    knows: dict[str, set[str] | None] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)  # member ids of replaced workers
    ports: dict[str, int] = field(default_factory=dict)  # web port by instance id

    def start(self, name: str, release: str) -> Worker:
        argv, extra = self.commands[release]
        # A pod's name and port stay: Faust refuses a static member's assignment made for
        # another web address (its assignor asserts the URL; the analysis consumer then stops).
        port = self.ports.setdefault(name, free_port())
        log = self.tmp / f"{name}-{release}.log"
        known = self.knows.get(release)
        env = {
            **{
                k: v
                for k, v in self.env.items()
                if known is None or not k.startswith("SLUICE_") or k in known
            },
            **extra,
            "SLUICE_KAFKA__INSTANCE_ID": name,
            "SLUICE_WORKER__WEB_PORT": str(port),
            "SLUICE_WORKER__DATA_DIR": str(self.tmp / f"data-{name}-{release}"),
        }
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*argv, "--log-level", "info", "worker"], env=env, cwd=ROOT, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.workers[name] = w = Worker(release, name, port, proc, log)
        return w

    def replace(self, name: str, release: str) -> Worker:
        """Stop the worker and start `release` with its instance id. Its old members stay in
        the groups (static membership) until the new process takes their place: `settled`
        waits for that, not for the groups as the old process left them."""
        admin = KafkaAdminClient(bootstrap_servers=self.env["SLUICE_KAFKA__BOOTSTRAP_SERVERS"])
        try:
            group = self.env["SLUICE_KAFKA__GROUP_ID"]
            ids = _member_ids(admin.describe_groups([group, f"{group}-analysis"]))
        finally:
            admin.close()
        self.gone |= {m for m in ids if m.startswith(f"{name}-")}
        self.workers[name].stop()
        return self.start(name, release)

    def logs(self) -> str:
        return "\n".join(w.tail() for w in self.workers.values())

    def settled(self, timeout: float = 90) -> None:
        """Each worker running and, in both consumer groups (the filter stage's on `events`,
        the analysis stage's on `suspects`), holding one of the two partitions."""
        group = self.env["SLUICE_KAFKA__GROUP_ID"]
        wanted = {group: self.env["SLUICE_TOPICS__EVENTS"],
                  f"{group}-analysis": self.env["SLUICE_TOPICS__SUSPECTS"]}  # fmt: skip
        admin = KafkaAdminClient(bootstrap_servers=self.env["SLUICE_KAFKA__BOOTSTRAP_SERVERS"])
        # kafka-python warns on every look at Faust's member metadata, which is not its format
        logging.getLogger("kafka.admin._groups").setLevel(logging.ERROR)
        deadline = time.monotonic() + timeout
        try:
            while True:
                for w in self.workers.values():
                    assert w.proc.poll() is None, w.tail()
                described = admin.describe_groups(list(wanted))
                held = _held(described, wanted)
                gone = self.gone & _member_ids(described)  # a replaced worker's, until it expires
                serving = all(http_get(w.port, "/metrics")[0] == 200 for w in self.workers.values())
                if serving and not gone and all(h == [1, 1] for h in held.values()):
                    return
                assert time.monotonic() < deadline, f"not settled: {held}\n{self.logs()}"
                time.sleep(0.5)
        finally:
            admin.close()


def _held(described: dict[str, Any], topics: dict[str, str]) -> dict[str, list[int]]:
    """Per group, how many partitions of its topic each member holds (stable groups only)."""
    out: dict[str, list[int]] = {}
    for group, topic in topics.items():
        d = described.get(group) or {}
        members = d.get("members", []) if d.get("group_state") == "Stable" else []
        out[group] = [_partitions_of(m.get("member_assignment"), topic) for m in members]
    return out


def _member_ids(described: dict[str, Any]) -> set[str]:
    return {m["member_id"] for d in described.values() for m in d.get("members", [])}


def _partitions_of(assignment: Any, topic: str) -> int:
    if not isinstance(assignment, dict):
        return 0  # not decoded (yet)
    parts = assignment.get("assigned_partitions", [])
    return sum(len(a["partitions"]) for a in parts if a["topic"] == topic)


def _phase_events(k: int) -> list[tuple[int, bytes]]:
    """(partition, value): one window of event time per scope, every scope on both events
    partitions; payment fails and its caller says so."""
    out = []
    start = T0 + timedelta(minutes=10 * k)
    for p in (0, 1):
        for scope in SCOPES:
            for i in range(20):
                ts = (start + timedelta(seconds=i + 20 * p)).isoformat()
                service, msg = (
                    ("pay", f"ERROR payment {i} failed: connection refused by database")
                    if i % 2 == 0
                    else ("order", f"ERROR order {i}: call to pay failed with 503")
                )
                ev = {"ts": ts, "scope": scope, "service": service, "level": "ERROR",
                      "message": msg}  # fmt: skip
                out.append((p, json.dumps(ev).encode()))
    return out


def _window_end(k: int) -> datetime:
    return T0 + timedelta(minutes=10 * k, seconds=60)


def _produce(bootstrap: str, topic: str, values: list[tuple[int, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for p, v in values:
            producer.send(topic, value=v, partition=p)
        producer.flush()
    finally:
        producer.close()


def _settings_known(pythonpath: str) -> set[str]:
    """The environment variables a release's settings read (its `setting_names`)."""
    script = "from sluice.stream.settings import setting_names; print(*setting_names())"
    out = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": pythonpath},
        cwd="/", capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return set(out.stdout.split())


@pytest.fixture
def group(kafka_env: KafkaEnv, tmp_path: Path, landed_release: str) -> Iterator[Group]:
    env = kafka_env(**PIPELINE)
    this = [sys.executable, "-m", "sluice.stream"]
    pythonpath = os.pathsep.join(filter(None, [landed_release, env.get("PYTHONPATH")]))
    g = Group(
        env,
        tmp_path,
        {
            "landed": (this, {"PYTHONPATH": pythonpath}),
            "this": (this, {}),
            "next": ([sys.executable, "-m", "tests.support.next_release"], {}),
        },
        {"landed": _settings_known(pythonpath)},
    )
    try:
        yield g
    finally:
        for w in g.workers.values():
            if w.proc.poll() is None:
                w.stop()


def test_a_rolling_upgrade_loses_nothing_and_each_release_reads_the_other(
    kafka_bootstrap: str, group: Group
) -> None:
    env = group.env

    def phase(k: int) -> dict[str, tuple[float, float]]:
        """Produce window k; wait for its outcomes and alerts; each worker's share of it."""
        group.settled()
        before = {n: (w.metric("sluice_events_consumed_total"),
                      w.metric("sluice_analysis_windows_analysed_total"))
                  for n, w in group.workers.items()}  # fmt: skip
        _produce(kafka_bootstrap, env["SLUICE_TOPICS__EVENTS"], _phase_events(k))
        expected = {(s, _window_end(k)) for s in SCOPES}

        def outcomes(values: list[bytes]) -> set[tuple[str, datetime]]:
            return {(o.scope, o.window_end) for o in (read_record(Outcome, v) for v in values)}

        read_until(kafka_bootstrap, env["SLUICE_TOPICS__OUTCOMES"],
                   lambda v: expected <= outcomes(v), 90, group.logs)  # fmt: skip
        read_until(
            kafka_bootstrap,
            env["SLUICE_TOPICS__ALERTS"],
            lambda v: expected <= {(a.report.scope, a.generated_at)
                                   for a in (read_record(Alert, x) for x in v)},
            60,
            group.logs,
        )  # fmt: skip
        return {
            n: (w.metric("sluice_events_consumed_total") - before[n][0],
                w.metric("sluice_analysis_windows_analysed_total") - before[n][1])
            for n, w in group.workers.items()
        }  # fmt: skip

    def mixed(k: int) -> None:
        shares = phase(k)
        releases = {w.release for w in group.workers.values()}
        print(f"phase {k} {sorted(releases)}: (events screened, windows analysed) {shares}")
        for name, (screened, analysed) in shares.items():
            assert screened > 0 and analysed > 0, (name, shares, group.logs())

    group.start("a", "landed")
    group.start("b", "landed")
    phase(0)
    group.replace("a", "this")
    mixed(1)  # this writes, landed reads, and the other way round
    group.replace("b", "this")
    phase(2)
    this_b = group.workers["b"]
    group.replace("a", "next")
    mixed(3)  # next writes an added field, this reads it
    unknown = this_b.metric("sluice_wire_unknown_fields_total", record="suspects")
    assert unknown > 0, group.logs()
    group.replace("b", "next")
    phase(4)

    dead = read_all(kafka_bootstrap, env["SLUICE_TOPICS__DEADLETTER"], 2.0)
    assert dead == [], [json.loads(d)["reason"] for d in dead]
    windows = Counter(
        (o.scope, o.window_end)
        for o in (read_record(Outcome, v)
                  for v in read_all(kafka_bootstrap, env["SLUICE_TOPICS__OUTCOMES"], 2.0))
    )  # fmt: skip
    assert set(windows) == {(s, _window_end(k)) for s in SCOPES for k in range(5)}
    assert set(windows.values()) == {1}, windows  # each window analysed once
    raw_alerts = read_all(kafka_bootstrap, env["SLUICE_TOPICS__ALERTS"], 2.0)
    alerts = [read_record(Alert, v) for v in raw_alerts]  # this release reads them all
    by_next = [json.loads(v) for v in raw_alerts if FIELD.encode() in v]
    assert by_next and all(FIELD in a and FIELD in a["report"] for a in by_next)
    revisions = Counter((a.fingerprint, a.revision) for a in alerts)
    assert set(revisions.values()) == {1}, revisions  # no revision published twice
    print(f"upgrade: {len(windows)} windows, each analysed once; {len(alerts)} alert revisions, "
          f"{len(by_next)} by the next release; 0 dead letters; this release dropped "
          f"{unknown:.0f} fields of the next release's suspects")  # fmt: skip
