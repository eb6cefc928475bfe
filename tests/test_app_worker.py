"""A Faust app built by create_app(settings), driven end to end through the real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

pytestmark = pytest.mark.integration


def test_worker_relays_events_to_suspects(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    events, suspects = unique_name("events"), unique_name("suspects")
    env = dict(os.environ)
    env.update(
        {
            "SLUICE_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "SLUICE_KAFKA__GROUP_ID": unique_name("group"),
            "SLUICE_KAFKA__PARTITIONS": "2",
            "SLUICE_TOPICS__EVENTS": events,
            "SLUICE_TOPICS__SUSPECTS": suspects,
            **{
                f"SLUICE_TOPICS__{n.upper()}": unique_name(n)
                for n in ("alerts", "feedback", "models", "deadletter")
            },
            "SLUICE_WORKER__DATA_DIR": str(tmp_path / "worker"),
        }
    )
    # Events are produced before the worker starts: it must pick them up from the earliest offset.
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        while events not in admin.list_topics():  # the worker creates the topology
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "worker did not create its topics"
            time.sleep(0.5)
        admin.close()
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        sent = {f"event {i}".encode() for i in range(10)}
        for v in sent:
            producer.send(events, key=b"svc", value=v)
        producer.flush(timeout=10)
        producer.close()
        consumer = KafkaConsumer(
            suspects,
            bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest",
            group_id=unique_name("reader"),
            consumer_timeout_ms=60000,
        )
        got = set()
        for msg in consumer:
            assert msg.key == b"svc"
            got.add(msg.value)
            if got == sent:
                break
        consumer.close()
        assert got == sent, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
