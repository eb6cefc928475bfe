"""A three-broker KRaft cluster with TLS and SASL/SCRAM listeners (deploy/local/kafka).

One cluster for the module: `start --brokers 3 --secure` on free ports. The worker,
`sluice produce` and `sluice alerts` run over the TLS listener and over the SASL_SSL one; wrong
credentials fail with an error that names the listener and never the password; and SIGKILL of
the leader of a busy `events` partition loses no event (replication 3, min.insync.replicas 2,
acks=all).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from tests.support.kafka import (
    LocalBroker,
    free_port_pair,
    numbered_events,
    producing_at,
    read_until,
    running_worker,
    sluice,
    suspect_messages_until,
    worker_env,
)

pytestmark = pytest.mark.integration


class Cluster(LocalBroker):
    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.bootstrap = ",".join(f"127.0.0.1:{port + 2 * i}" for i in range(3))

    def security(self) -> dict[str, str]:
        return dict(json.loads((self.run_dir / "security.json").read_text()))

    def pid(self, node: int) -> int:
        return int((self.run_dir / f"node-{node}" / "kafka.pid").read_text())


@pytest.fixture(scope="module")
def cluster(kafka_bootstrap: str) -> Iterator[Cluster]:
    c = Cluster(_free_span())
    try:
        c._run("start", "--fresh", "--brokers", "3", "--secure")
        yield c
    finally:
        c.remove()


def _free_span() -> int:
    """A base port whose +0..+5 (nodes) and +10..+15 (TLS, SASL) are free."""
    import socket

    for _ in range(100):
        base = free_port_pair()
        if base > 64000:
            continue
        try:
            socks = []
            for off in (0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + off))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free port span")


def _secure_env(
    cluster: Cluster, protocol: str, unique_name: Callable[[str], str], tmp: Path, **extra: str
) -> dict[str, str]:
    sec = cluster.security()
    settings = {
        "SLUICE_KAFKA__SECURITY_PROTOCOL": protocol,
        "SLUICE_KAFKA__SSL_CAFILE": sec["ca"],
        "SLUICE_KAFKA__REPLICATION_FACTOR": "3",
        **extra,
    }
    bootstrap = sec["tls_bootstrap"]
    if protocol == "SASL_SSL":
        bootstrap = sec["sasl_bootstrap"]
        settings |= {
            "SLUICE_KAFKA__SASL_MECHANISM": sec["sasl_mechanism"],
            "SLUICE_KAFKA__SASL_USERNAME": sec["username"],
            "SLUICE_KAFKA__SASL_PASSWORD": Path(sec["password_file"]).read_text().strip(),
        }
    return worker_env(bootstrap, unique_name, tmp, **settings)


def _fault_file(tmp: Path, n: int = 40) -> Path:
    path = tmp / "fault.jsonl"
    lines = [
        json.dumps(
            {
                "ts": f"2024-03-01T10:00:{i % 60:02d}Z",
                "service": "ts-pay-service",
                "level": "ERROR",
                "message": f"ERROR payment {i} failed: connection refused by ts-bank-service",
            }
        )
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_worker_produce_and_alerts_over_tls_and_sasl(
    cluster: Cluster, protocol: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    env = _secure_env(cluster, protocol, unique_name, tmp_path, SLUICE_PIPELINE__IDLE_CLOSE_S="2")
    sluice(env, "topics", "create")
    with running_worker(env, tmp_path / "worker.log"):
        sluice(env, "produce", str(_fault_file(tmp_path)))
        deadline = time.monotonic() + 90
        out = ""
        while time.monotonic() < deadline:
            out = sluice(env, "alerts", "--json", "--timeout", "3")
            if '"fingerprint"' in out:
                break
        assert '"fingerprint"' in out, (tmp_path / "worker.log").read_text()[-3000:]
    alert = json.loads(next(x for x in out.splitlines() if x.startswith("{")))
    assert alert["report"]["root_causes"][0]["service"] == "ts-pay-service"
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert env.get("SLUICE_KAFKA__SASL_PASSWORD", "\0") not in log + out


def test_wrong_credentials_name_the_listener_and_never_the_password(
    cluster: Cluster, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    env = _secure_env(cluster, "SASL_SSL", unique_name, tmp_path)
    right = env["SLUICE_KAFKA__SASL_PASSWORD"]
    env["SLUICE_KAFKA__SASL_PASSWORD"] = wrong = "not-the-password-5e2d"
    for args in (["produce", str(_fault_file(tmp_path))], ["worker"]):
        proc = subprocess.run(
            [sys.executable, "-m", "sluice.stream", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        shown = proc.stdout + proc.stderr
        assert proc.returncode != 0, shown[-2000:]
        assert "SASL_SSL" in shown and "SCRAM-SHA-512" in shown and "'sluice'" in shown
        assert cluster.security()["sasl_bootstrap"] in shown
        assert "Authentication failed" in shown or "credentials" in shown
        assert wrong not in shown and right not in shown
        assert "Traceback" not in shown


def test_sigkill_of_a_partition_leader_loses_no_event(
    cluster: Cluster, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    n, rate = 900, 30
    env = worker_env(
        cluster.bootstrap,
        unique_name,
        tmp_path,
        SLUICE_KAFKA__REPLICATION_FACTOR="3",
        SLUICE_PIPELINE__AUDIT_RATE="1",  # every event is forwarded: each one is checkable
    )
    data = tmp_path / "events.jsonl"
    expected = numbered_events(data, n)
    sluice(env, "topics", "create")
    events = env["SLUICE_TOPICS__EVENTS"]
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    (desc,) = admin.describe_topics([events])
    admin.close()
    part0 = next(p for p in desc["partitions"] if p["partition_index"] == 0)
    assert len(part0["replica_nodes"]) == 3 and len(part0["isr_nodes"]) == 3
    leader = int(part0["leader_id"])
    worker_log = tmp_path / "worker.log"
    with (
        running_worker(env, worker_log),
        producing_at(env, data, rate, tmp_path / "produce.log") as produced,
    ):
        # busy: the worker is consuming what the producer writes (its first suspects are out;
        # a fixed sleep could kill the leader while a loaded machine was still starting it)
        read_until(cluster.bootstrap, env["SLUICE_TOPICS__SUSPECTS"], lambda v: len(v) >= 1, 90,
                   lambda: worker_log.read_text(errors="replace")[-4000:])  # fmt: skip
        os.kill(cluster.pid(leader), signal.SIGKILL)
        produced()
        got = suspect_messages_until(cluster.bootstrap, env, expected, worker_log)
    assert got == expected
    cluster._run("start", "--brokers", "3")  # the killed node rejoins (same data directory)
