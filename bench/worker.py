"""One worker's throughput on one core, on real log lines, through the local Kafka.

    make bench     (starts the local Kafka; or: deploy/local/kafka start && python -m bench.worker)

For each data set a backlog is produced to a fresh `events` topic (1 partition), then one
`sluice worker` pinned to one CPU (taskset) consumes it: parse, filter, audit sample, suspects,
windows and heuristic analysis. The rate is read from the consumer group's committed offsets
between the first and the last commit, so start-up time is not counted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kafka import KafkaAdminClient, KafkaProducer
from kafka.structs import TopicPartition

from models.filter.datasets import load_hdfs, nezha_windows
from stream.sources import read_records

BOOTSTRAP = f"127.0.0.1:{os.environ.get('SLUICE_KAFKA_PORT', '9092')}"


def _backlog(name: str) -> list[bytes]:
    if name == "HDFS (text lines)":
        return [t.encode() for t in load_hdfs().texts]
    return [v for w in nezha_windows()[:30] for v, _k, _s in read_records(str(w), "nezha")]


def _committed(result: object, tp: TopicPartition) -> int:
    """The committed offset of tp in kafka-python 3's list_group_offsets answer (0 if none)."""
    groups = result.values() if isinstance(result, dict) else [result]
    for g in groups:
        meta = g.get(tp) if isinstance(g, dict) else None
        if meta is not None:
            off = getattr(meta, "offset", meta)
            return int(off) if isinstance(off, int) and off > 0 else 0
    return 0


def run(name: str, values: list[bytes]) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = {t: f"bench-{t}-{tag}" for t in ("events", "suspects", "alerts", "feedback",
                                               "models", "deadletter")}  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    data_dir = tempfile.mkdtemp(prefix="sluice-bench-")
    env.update({"SLUICE_KAFKA__BOOTSTRAP_SERVERS": BOOTSTRAP, "SLUICE_KAFKA__PARTITIONS": "1",
                "SLUICE_KAFKA__GROUP_ID": f"bench-{tag}", "SLUICE_WORKER__DATA_DIR": data_dir,
                **{f"SLUICE_TOPICS__{k.upper()}": v for k, v in topics.items()}})  # fmt: skip
    subprocess.run([sys.executable, "-m", "stream", "topics", "create"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=50, batch_size=1 << 20)
    for v in values:
        producer.send(topics["events"], value=v)
    producer.flush()
    producer.close()
    cmd = [sys.executable, "-m", "stream", "worker"]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    log = open(Path(data_dir) / "worker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    tp = TopicPartition(topics["events"], 0)
    first: tuple[float, int] | None = None
    last: tuple[float, int] = (time.monotonic(), 0)
    deadline = time.monotonic() + 600
    try:
        while last[1] < len(values) and time.monotonic() < deadline:
            time.sleep(0.1)
            result = admin.list_group_offsets({f"bench-{tag}": [tp]})
            done = _committed(result, tp)
            if done > last[1]:
                last = (time.monotonic(), done)
                if first is None:
                    first = last
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        admin.delete_topics(list(topics.values()))
        admin.close()
    if first is None or last[1] <= first[1]:
        print(f"{name:22s} {len(values):9,d}  no progress measured (see {data_dir}/worker.log)")
        return
    rate = (last[1] - first[1]) / (last[0] - first[0])
    print(f"{name:22s} {len(values):9,d} {last[1] - first[1]:12,d} {last[0] - first[0]:8.1f}s "
          f"{rate:12,.0f}/s")  # fmt: skip
    shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    print(f"one sluice worker, one core, local Kafka {BOOTSTRAP}, heuristic analyst\n")
    print(f"{'data set':22s} {'backlog':>9s} {'measured':>12s} {'time':>9s} {'throughput':>13s}")
    for name in ("HDFS (text lines)", "Nezha (JSON events)"):
        run(name, _backlog(name))


if __name__ == "__main__":
    main()
