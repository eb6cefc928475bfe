"""Three workers, six partitions, one SIGKILL mid-stream: nothing lost, nothing published twice.

The stream: JSON events of six scopes, each scope's events in one 60 s window of event time
that stays open until the stream ends (windows close when idle), so every window is open when a
worker is killed and is analysed after its restart. The killed worker comes back within 5 s with
the same static membership id.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from sluice.models.filter import OnnxFilter
from sluice.stream import PipelineSettings
from sluice.stream.filtering.screen import screen_batch
from sluice.stream.records import Alert
from tests.support.kafka import (
    KafkaEnv,
    committed_offsets,
    read_until,
    scopes_on_partitions,
    suspects_in,
)

pytestmark = pytest.mark.integration

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


#: Every worker, the killed one included, holds open windows at the kill.
SCOPES = scopes_on_partitions(6)
PIPELINE = {
    "SLUICE_PIPELINE__ALERT_TIME": "event",
    "SLUICE_PIPELINE__ALLOWED_LATENESS_S": "3600",
    "SLUICE_PIPELINE__IDLE_CLOSE_S": "8",
    "SLUICE_PIPELINE__BATCH_SIZE": "500",
}


def _events(n: int) -> list[bytes]:
    """Mostly INFO chatter; every tenth trace a database timeout seen by its caller too."""
    out = []
    for i in range(n):
        scope = SCOPES[i % len(SCOPES)]
        ts = (T0 + timedelta(milliseconds=50 * (i // len(SCOPES)) % 55_000)).isoformat()
        trace = f"tr{i // 2}"
        if (i // len(SCOPES)) % 10 == 0:
            service, msg = (
                ("db", f"ERROR db timeout after 3000 ms on shard {i % 7}")
                if i % 2 == 0
                else ("api", f"ERROR db call failed: upstream timeout {i % 5}")
            )
        else:
            service, msg = "api", f"INFO request {i} served in {i % 90} ms"
        out.append(
            json.dumps(
                {"ts": ts, "service": service, "scope": scope, "trace_id": trace, "message": msg}
            ).encode()
        )
    return out


def _start(env: dict[str, str], i: int, logs: Path) -> subprocess.Popen[bytes]:
    log = open(logs / f"worker-{i}.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "sluice.stream", "--log-level", "info", "worker"],
        env={
            **env,
            "SLUICE_KAFKA__INSTANCE_ID": f"w{i}",
            "SLUICE_WORKER__DATA_DIR": str(logs / f"w{i}"),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def test_sigkill_mid_stream_loses_nothing_and_the_group_recovers(
    kafka_bootstrap: str, tmp_path: Path, kafka_env: KafkaEnv
) -> None:
    env = kafka_env(SLUICE_KAFKA__PARTITIONS="6", **PIPELINE)
    events_topic = env["SLUICE_TOPICS__EVENTS"]
    values = _events(36_000)
    workers = [_start(env, i, tmp_path) for i in range(3)]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    tps = [TopicPartition(events_topic, p) for p in range(6)]
    group = env["SLUICE_KAFKA__GROUP_ID"]
    sources: dict[int, str] = {}

    def log() -> str:
        return "\n".join(
            (tmp_path / f"worker-{i}.log").read_text(errors="replace")[-1500:] for i in range(3)
        )

    try:
        _until_members(admin, [group, f"{group}-analysis"], 3, workers, log)

        def produce() -> None:
            producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
            futures = []
            t0 = time.perf_counter()
            for n, v in enumerate(values):
                futures.append((n, producer.send(events_topic, value=v)))
                ahead = n / 2000 - (time.perf_counter() - t0)  # 2,000 events/s for 18 s
                if ahead > 0:
                    time.sleep(ahead)
            producer.flush()
            for n, f in futures:
                md = f.get(timeout=30)
                sources[n] = f"{events_topic}:{md.partition}:{md.offset}"
            producer.close()

        feeder = threading.Thread(target=produce)
        feeder.start()
        time.sleep(6)
        os.kill(workers[0].pid, signal.SIGKILL)  # mid-stream, mid-window, no goodbye
        workers[0].wait()
        time.sleep(3)
        restarted = time.monotonic()
        at_restart = committed_offsets(admin, group, tps)
        workers[0] = _start(env, 0, tmp_path)
        recovered = None
        while recovered is None and time.monotonic() - restarted < 60:
            now = committed_offsets(admin, group, tps)
            if all(now[p] > at_restart[p] for p in now):
                recovered = time.monotonic() - restarted
            time.sleep(0.2)
        feeder.join()
        print(f"\nafter SIGKILL and restart, every partition committing again in {recovered} s")
        assert recovered is not None and recovered <= 15, log()

        # The filter stage: every committed offset's events are accounted for ...
        deadline = time.monotonic() + 60
        probe = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
        ends = {tp.partition: off for tp, off in probe.end_offsets(tps).items()}
        probe.close()
        while committed_offsets(admin, group, tps) != ends:
            assert time.monotonic() < deadline, (committed_offsets(admin, group, tps), ends, log())
            time.sleep(0.5)
        assert sum(ends.values()) == len(values)

        # ... and every event the filter forwards is in `suspects` (duplicates counted).
        cfg = PipelineSettings(allowed_lateness_s=3600, idle_close_s=8)
        expected: dict[str, str] = {}  # source -> scope
        for start in range(0, len(values), 1000):
            chunk = values[start : start + 1000]
            screened = screen_batch(
                chunk, [None] * len(chunk), lambda i, s=start: (sources[s + i], None, None),
                OnnxFilter(), cfg,
            )  # fmt: skip
            for scope, messages in screened.messages.items():
                for s in suspects_in(messages):
                    expected[s.event.source or ""] = scope
        suspects_topic = env["SLUICE_TOPICS__SUSPECTS"]
        raw = read_until(
            kafka_bootstrap,
            suspects_topic,
            lambda v: set(expected) <= {s.event.source for s in suspects_in(v)},
            60,
            log,
        )
        seen = Counter(s.event.source for s in suspects_in(raw))
        duplicates = sum(c - 1 for c in seen.values())
        print(f"suspects: {len(expected)} expected, all present, {duplicates} duplicates")
        assert len(expected) > 1000

        # Every window was open at the kill; each is analysed after it, with all its suspects.
        per_scope = Counter(expected.values())

        forwarded = Counter[str]()

        def analysed_all(v: list[bytes]) -> bool:
            forwarded.clear()
            for a in map(Alert.model_validate_json, v):
                m = re.search(r"out of (\d+) forwarded", a.report.summary)
                if a.status == "firing" and m:
                    forwarded[a.report.scope] += int(m.group(1))
            return all(forwarded[s] >= n for s, n in per_scope.items())

        def short() -> str:
            counts = {s: (forwarded[s], n) for s, n in per_scope.items()}
            return f"analysed of forwarded, per scope: {counts}\n{log()}"

        alert_values = read_until(
            kafka_bootstrap, env["SLUICE_TOPICS__ALERTS"], analysed_all, 90, short
        )
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
        admin.close()
    alerts = [Alert.model_validate_json(v) for v in alert_values]
    assert {a.report.scope for a in alerts} == set(SCOPES)
    contents: dict[tuple[str, int], set[str]] = {}
    for a in alerts:
        contents.setdefault((a.fingerprint, a.revision), set()).add(a.model_dump_json())
    republished = len(alerts) - len(contents)
    print(f"alerts: {len(alerts)} published, {republished} identical re-publications")
    assert all(len(c) == 1 for c in contents.values()), "a revision published with two contents"


def _until_members(
    admin: KafkaAdminClient, groups: list[str], n: int, workers: list[Any], log: Any
) -> None:
    """Until each group is stable with `n` members (the workers joined both: the filter
    stage's and the analysis stage's), within 90 s."""
    deadline = time.monotonic() + 90
    while True:
        assert all(w.poll() is None for w in workers), log()
        described = admin.describe_groups(groups).values()
        if all(g["group_state"] == "Stable" and len(g["members"]) == n for g in described):
            return
        seen = [(g["group_state"], len(g["members"])) for g in described]
        assert time.monotonic() < deadline, (seen, log())
        time.sleep(0.5)
