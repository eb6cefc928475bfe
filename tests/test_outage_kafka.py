"""The broker goes away for 20 s under a steady produce rate and comes back on the same data.

A broker of the test's own (deploy/local/kafka on a free port), so the shared one stays up.
The worker and `sluice produce` must resume without a restart, every event must reach
`suspects` (audit rate 1: each event is forwarded, so each is checkable), and the connection
errors of the outage must be logged at a bounded rate, not once per retry.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.kafka_helpers import (
    LocalBroker,
    free_port_pair,
    read_until,
    running_worker,
    sluice,
    suspects_in,
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
    data.write_text(
        "".join(
            json.dumps({"service": f"svc-{i % 3}", "message": f"event {i} ok"}) + "\n"
            for i in range(N)
        )
    )
    sluice(env, "topics", "create")
    produce_log = tmp_path / "produce.log"
    with running_worker(env, tmp_path / "worker.log"), open(produce_log, "wb") as plog:
        producer = subprocess.Popen(
            [sys.executable, "-m", "stream", "produce", str(data), "--rate", str(RATE)],
            env=env,
            stdout=plog,
            stderr=subprocess.STDOUT,
        )
        time.sleep(6)
        broker.stop()
        time.sleep(OUTAGE_S)
        broker.start()
        assert producer.wait(timeout=180) == 0, produce_log.read_text()[-3000:]
        log = lambda: (tmp_path / "worker.log").read_text(errors="replace")[-4000:]  # noqa: E731
        values = read_until(
            broker.bootstrap,
            env["SLUICE_TOPICS__SUSPECTS"],
            lambda v: len({s.event.message for s in suspects_in(v)}) >= N,
            180,
            log,
        )
    got = {s.event.message for s in suspects_in(values)}
    assert got == {f"event {i} ok" for i in range(N)}
    worker_lines = (tmp_path / "worker.log").read_text(errors="replace").splitlines()
    produce_lines = produce_log.read_text(errors="replace").splitlines()
    # 20 s of outage: a line per kind and interval, with a count, not a line per retry
    for lines in (worker_lines, produce_lines):
        errors = [x for x in lines if "ERROR" in x or "WARNING" in x]
        assert len(errors) < 80, "\n".join(errors[-60:])
    assert any("more like this" in x for x in worker_lines), "\n".join(worker_lines[-60:])
