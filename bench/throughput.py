"""Worker throughput against the consumer under it, on real log lines, through the local Kafka.

    make bench    (or: deploy/local/kafka start && python -m bench.throughput)

For each data set (1,000,000 HDFS lines: the shared 222,579 replicated; 200,000 Nezha JSON events:
every window, replicated), in one run and on the same topic:
  (a) a raw aiokafka `getmany` drain with no processing, pinned to one core;
  (a') a raw librdkafka drain (confluent-kafka, batch `consume`), pinned to one core;
  (b) one `sluice worker` pinned to one core (rate from the filter stage's committed offsets,
      first commit to last, so start-up is not counted);
  (b') the same with signals on (SLUICE_PIPELINE__SIGNALS__ENABLED): their cost;
  (b'') a worker of the filter stage alone (SLUICE_WORKER__STAGES=filter);
  (c) two workers, each pinned to its own core, on a two-partition copy of the topic (total).
Then p50/p99 latency from produce to suspect at half of (b)'s rate (HDFS), on a worker of both
stages and on one of the filter stage alone, and the worker's peak RSS. Figures are printed and
written to bench/results/throughput.json. The broker runs on the same two cores: (c) shares
them with it.

    python -m bench.throughput --before REF

also runs (b) with the code of git REF (a worktree of it first on the workers' PYTHONPATH), on
the same topic in the same run: the before and after of a change, side by side.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from sluice.models.training.datasets import load_hdfs, nezha_windows
from sluice.stream import TopicNames
from sluice.stream.ingest.sources import read_records
from sluice.stream.records import SuspectBatch, parse_suspects_record

BOOTSTRAP = f"127.0.0.1:{os.environ.get('SLUICE_KAFKA_PORT', '9092')}"
RESULTS = Path(__file__).resolve().parent / "results" / "throughput.json"
TOPICS = tuple(TopicNames.model_fields)


def _hdfs(n: int) -> list[bytes]:
    base = [t.encode() for t in load_hdfs().texts]
    return [base[i % len(base)] for i in range(n)]


def _nezha(n: int) -> list[bytes]:
    base = [v for w in nezha_windows() for v, _k, _s in read_records(str(w), "nezha")]
    return [base[i % len(base)] for i in range(n)]


def _taskset(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") else []


def _env(tag: str, partitions: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(
        {
            "SLUICE_KAFKA__BOOTSTRAP_SERVERS": BOOTSTRAP,
            "SLUICE_KAFKA__PARTITIONS": str(partitions),
            "SLUICE_KAFKA__GROUP_ID": f"bench-{tag}",
            "SLUICE_WORKER__DATA_DIR": tempfile.mkdtemp(prefix="sluice-bench-"),
            **{f"SLUICE_TOPICS__{t.upper()}": f"bench-{t}-{tag}" for t in TOPICS},
        }
    )
    return env


def _topics(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "sluice.stream", "topics", "create"],
        env=env,
        check=True,
        capture_output=True,
    )


def _produce(topic: str, values: list[bytes], rate: float | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=20, batch_size=1 << 20)
    t0 = time.perf_counter()
    for n, v in enumerate(values, start=1):
        producer.send(topic, value=v)
        if rate and n % 100 == 0:
            ahead = n / rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush()
    producer.close()


def _committed(admin: KafkaAdminClient, group: str, tps: list[TopicPartition]) -> int:
    total = 0
    result = admin.list_group_offsets({group: tps})
    groups = result.values() if isinstance(result, dict) else [result]
    for g in groups:
        for tp in tps:
            meta = g.get(tp) if isinstance(g, dict) else None
            off = getattr(meta, "offset", meta) if meta is not None else 0
            total += int(off) if isinstance(off, int) and off > 0 else 0
    return total


@contextmanager
def _workers(env: dict[str, str], cores: list[int]) -> Iterator[list[subprocess.Popen[bytes]]]:
    logs = Path(env["SLUICE_WORKER__DATA_DIR"])
    procs = []
    for i, core in enumerate(cores):
        log = open(logs / f"worker-{i}.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [*_taskset(core), sys.executable, "-m", "sluice.stream", "worker"],
                env={**env, "SLUICE_WORKER__DATA_DIR": str(logs / f"w{i}")},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _measure(
    env: dict[str, str], n: int, cores: list[int], topic: str | None = None
) -> dict[str, Any]:
    """Run workers over a backlog of n records of `topic` (default: events); rate from
    committed offsets, first to last."""
    topic = topic or env["SLUICE_TOPICS__EVENTS"]
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    parts = len(admin.describe_topics([topic])[0]["partitions"])
    tps = [TopicPartition(topic, p) for p in range(parts)]
    group = env["SLUICE_KAFKA__GROUP_ID"]
    first: tuple[float, int] | None = None
    last = (time.monotonic(), 0)
    rss = 0.0
    with _workers(env, cores) as procs:
        deadline = time.monotonic() + 420
        while last[1] < n and time.monotonic() < deadline:
            time.sleep(0.05)
            done = _committed(admin, group, tps)
            if done > last[1]:
                last = (time.monotonic(), done)
                first = first or last
            if any(p.poll() is not None for p in procs):
                break
        rss = max(_peak_rss_mb(p.pid) for p in procs if p.poll() is None)
    admin.close()
    if first is None or last[1] <= first[1]:
        return {"events": 0, "events_per_s": 0.0, "error": f"no progress, see {env}"}
    return {
        "events": last[1] - first[1],
        "seconds": round(last[0] - first[0], 2),
        "events_per_s": round((last[1] - first[1]) / (last[0] - first[0])),
        "complete": last[1] >= n,
        "peak_rss_mb": round(rss, 1),
    }


_DRAIN = """
import asyncio, sys, time
from aiokafka import AIOKafkaConsumer
async def main(topic, n, bootstrap):
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                         auto_offset_reset="earliest", enable_auto_commit=False)
    await c.start()
    got, t0 = 0, None
    while got < n:
        data = await c.getmany(timeout_ms=500, max_records=2000)
        for msgs in data.values():
            if t0 is None:
                t0 = time.perf_counter()
            got += len(msgs)
    print(got / (time.perf_counter() - t0))
    await c.stop()
asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""


_DRAIN_RDKAFKA = """
import sys, time, uuid
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[3], "group.id": uuid.uuid4().hex,
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([sys.argv[1]])
n, got, t0 = int(sys.argv[2]), 0, None
while got < n:
    msgs = c.consume(num_messages=2000, timeout=0.5)
    if msgs and t0 is None:
        t0 = time.perf_counter()
    got += sum(1 for m in msgs if m.error() is None)
print(got / (time.perf_counter() - t0))
c.close()
"""


def _drain(topic: str, n: int, script: str = _DRAIN) -> float:
    out = subprocess.run(
        [*_taskset(0), sys.executable, "-c", script, topic, str(n), BOOTSTRAP],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _latency(
    rate: float, values: list[bytes], seconds: float = 20.0, **settings: str
) -> dict[str, Any]:
    """Produce at `rate` to a running worker; produce-to-suspect latency of flagged events."""
    env = {**_env(uuid.uuid4().hex[:8], 1), **settings}
    _topics(env)
    n = min(len(values), int(rate * seconds))
    with _workers(env, [0]):
        time.sleep(12)  # the worker joins its groups before the clock starts
        _produce(env["SLUICE_TOPICS__EVENTS"], values[:n], rate)
        time.sleep(5)
    produced: dict[int, int] = {}
    consumer = KafkaConsumer(
        env["SLUICE_TOPICS__EVENTS"],
        bootstrap_servers=BOOTSTRAP,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    for m in consumer:
        produced[m.offset] = m.timestamp
    consumer.close()
    consumer = KafkaConsumer(
        env["SLUICE_TOPICS__SUSPECTS"],
        bootstrap_servers=BOOTSTRAP,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    lat: list[float] = []
    for m in consumer:
        rec = parse_suspects_record(m.value)
        for s in rec.suspects if isinstance(rec, SuspectBatch) else []:
            off = int((s.event.source or "::-1").rsplit(":", 1)[1])
            if off in produced and not s.audit:
                lat.append(m.timestamp - produced[off])
    consumer.close()
    lat.sort()
    if not lat:
        return {"rate": round(rate), "suspects": 0}
    return {
        "rate": round(rate),
        "events": n,
        "suspects": len(lat),
        "p50_ms": lat[len(lat) // 2],
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


def _site_of(ref: str) -> Path:
    """A folder whose `sluice` package is the code of git `ref` (a worktree, linked)."""
    root = Path(__file__).resolve().parent.parent
    tree = Path(tempfile.mkdtemp(prefix="sluice-before-")) / "tree"
    subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(tree), ref],
                   check=True, capture_output=True)  # fmt: skip
    site = tree.parent / "site" / "sluice"
    site.mkdir(parents=True)
    (site / "stream").symlink_to(tree / "stream")
    (site / "models").symlink_to(tree / "models")
    return site.parent


def _group(env: dict[str, str], suffix: str, **settings: str) -> dict[str, str]:
    """The same topics, a consumer group of its own (another reading of the same records)."""
    out = {**env, "SLUICE_KAFKA__GROUP_ID": f"{env['SLUICE_KAFKA__GROUP_ID']}-{suffix}", **settings}
    _topics(out)
    return out


def run_dataset(name: str, values: list[bytes], before: Path | None = None) -> dict[str, Any]:
    n = len(values)
    one = _env(uuid.uuid4().hex[:8], 1)
    _topics(one)
    _produce(one["SLUICE_TOPICS__EVENTS"], values)
    drain = _drain(one["SLUICE_TOPICS__EVENTS"], n)
    rdkafka = _drain(one["SLUICE_TOPICS__EVENTS"], n, _DRAIN_RDKAFKA)
    old = None
    if before is not None:  # the code before, on the same topic, just before the code now
        path = os.pathsep.join(x for x in (str(before), os.environ.get("PYTHONPATH")) if x)
        old = _measure(_group(one, "before", PYTHONPATH=path), n, [0])
    single = _measure(one, n, [0])
    alone = _measure(_group(one, "filter", SLUICE_WORKER__STAGES="filter"), n, [0])
    # (b') the same worker with signals on: every event also counted per service,
    # bucket and trace hop; its own group on the same topic
    sig = {**one, "SLUICE_KAFKA__GROUP_ID": one["SLUICE_KAFKA__GROUP_ID"] + "-signals",
           "SLUICE_PIPELINE__SIGNALS__ENABLED": "true"}  # fmt: skip
    _topics(sig)
    with_signals = _measure(sig, n, [0])
    two = _env(uuid.uuid4().hex[:8], 2)
    _topics(two)
    _produce(two["SLUICE_TOPICS__EVENTS"], values)
    double = _measure(two, n, [0, 1])
    row = {
        "events": n,
        "raw_drain_per_s": round(drain),
        "raw_rdkafka_drain_per_s": round(rdkafka),
        "one_worker_before": old,
        "one_worker": single,
        "filter_stage_alone": alone,
        "ratio_worker_to_rdkafka": round(single["events_per_s"] / rdkafka, 3),
        "ratio_filter_alone_to_drain": round(alone["events_per_s"] / drain, 3),
        "one_worker_signals": with_signals,
        "signals_cost": round(1 - with_signals["events_per_s"] / max(1, single["events_per_s"]), 3),
        "two_workers": double,
        "ratio_worker_to_drain": round(single["events_per_s"] / drain, 3),
        "scaling_two_to_one": round(double["events_per_s"] / max(1, single["events_per_s"]), 2),
    }
    print(
        f"{name:22s} {n:>9,d} {drain:>12,.0f}/s {single['events_per_s']:>12,.0f}/s "
        f"{double['events_per_s']:>12,.0f}/s {row['ratio_worker_to_drain']:>8.3f} "
        f"{row['scaling_two_to_one']:>6.2f}x {single.get('peak_rss_mb', 0):>7.0f} MB   "
        f"with signals {with_signals['events_per_s']:,.0f}/s (cost {row['signals_cost']:.1%})",
        flush=True,
    )
    print(
        f"{'':22s} librdkafka drain {rdkafka:,.0f}/s (worker {row['ratio_worker_to_rdkafka']:.3f}"
        f" of it); filter stage alone {alone['events_per_s']:,.0f}/s "
        f"({row['ratio_filter_alone_to_drain']:.3f} of the aiokafka drain)"
        + (f"; before: one worker {old['events_per_s']:,.0f}/s" if old else ""),
        flush=True,
    )
    return row


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", metavar="REF", help="also run one worker of git REF's code")
    args = parser.parse_args()
    before = _site_of(args.before) if args.before else None
    print(f"sluice worker throughput, local Kafka {BOOTSTRAP}, heuristic analyst, pinned cores\n")
    print(
        f"{'data set':22s} {'events':>9s} {'(a) drain':>14s} {'(b) 1 worker':>14s} "
        f"{'(c) 2 workers':>14s} {'(b)/(a)':>8s} {'(c)/(b)':>7s} {'RSS':>10s}"
    )
    hdfs = _hdfs(1_000_000)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "command": "python -m bench.throughput"
        + (f" --before {args.before}" if args.before else ""),
        "before": args.before,
        "hdfs": run_dataset("HDFS (text lines)", hdfs, before),
        "nezha": run_dataset("Nezha (JSON events)", _nezha(200_000), before),
    }
    rate = results["hdfs"]["one_worker"]["events_per_s"] / 2
    if before is not None:  # the worktree `_site_of` added
        root, tree = Path(__file__).resolve().parent.parent, before.parent / "tree"
        subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)],
                       check=False, capture_output=True)  # fmt: skip
    results["latency_half_load_hdfs"] = lat = _latency(rate, hdfs)
    print(
        f"\nproduce -> suspect latency at {lat['rate']:,}/s (half of one worker's rate, HDFS): "
        f"p50 {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms over {lat['suspects']} suspects"
    )
    # the same load on a worker of the filter stage alone: the analysis stage off its loop
    results["latency_half_load_hdfs_filter_alone"] = lat = _latency(
        rate, hdfs, SLUICE_WORKER__STAGES="filter"
    )
    print(
        f"the same, the filter stage alone (SLUICE_WORKER__STAGES=filter): "
        f"p50 {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms over {lat['suspects']} suspects"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
