"""Helpers for integration tests: a `sluice worker` subprocess on unique topics, and readers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from sluice.stream import TopicNames
from sluice.stream.records import Suspect, SuspectBatch, parse_suspects_record

#: The time the fault of `fault_events` starts.
T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
TOPICS = tuple(TopicNames.model_fields)  # every topic of the topology, unique per test


#: `kafka_env(**settings)`: the environment of a Sluice process on a topology of its own, topics
#: created unless `create=False` (the `kafka_env` fixture).
KafkaEnv = Callable[..., dict[str, str]]
#: `settings_for(env)`: the Settings object a process with `env` builds (the fixture).
SettingsFor = Callable[[dict[str, str]], Any]


def scopes_on_partitions(n: int) -> list[str]:
    """Scope names whose suspects land on n distinct partitions of n (murmur2, as producers
    hash keys), the scope of partition p at index p."""
    from kafka.partitioner.default import murmur2

    by_partition: dict[int, str] = {}
    i = 0
    while len(by_partition) < n:
        name = f"cell-{i}"
        by_partition.setdefault((murmur2(name.encode()) & 0x7FFFFFFF) % n, name)
        i += 1
    return [by_partition[p] for p in range(n)]


def worker_env(
    bootstrap: str, unique_name: Callable[[str], str], tmp: Path, **settings: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(
        {
            "SLUICE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "SLUICE_KAFKA__GROUP_ID": unique_name("group"),
            "SLUICE_KAFKA__PARTITIONS": "2",
            "SLUICE_WORKER__DATA_DIR": str(tmp / "worker-data"),
            **{f"SLUICE_TOPICS__{t.upper()}": unique_name(t) for t in TOPICS},
            **settings,
        }
    )
    return env


def client_kwargs(env: dict[str, str]) -> dict[str, Any]:
    """kafka-python arguments for the listener a worker environment names (TLS, SASL too)."""
    out: dict[str, Any] = {"bootstrap_servers": env["SLUICE_KAFKA__BOOTSTRAP_SERVERS"]}
    names = {
        "SECURITY_PROTOCOL": "security_protocol",
        "SSL_CAFILE": "ssl_cafile",
        "SASL_MECHANISM": "sasl_mechanism",
        "SASL_USERNAME": "sasl_plain_username",
        "SASL_PASSWORD": "sasl_plain_password",
    }
    for name, arg in names.items():
        if f"SLUICE_KAFKA__{name}" in env:
            out[arg] = env[f"SLUICE_KAFKA__{name}"]
    return out


def sluice(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Run the CLI (not imported: the real command line, in its own process)."""
    proc = subprocess.run(
        [sys.executable, "-m", "sluice.stream", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@contextmanager
def running_worker(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.stream", "--log-level", "info", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        admin = KafkaAdminClient(**client_kwargs(env))
        deadline = time.monotonic() + 60
        while env["SLUICE_TOPICS__EVENTS"] not in admin.list_topics():
            assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the worker did not create its topics"
            time.sleep(0.3)
        admin.close()
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _from_the_beginning(bootstrap: str, topic: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )


def produce(bootstrap: str, topic: str, values: list[bytes], key: bytes | None = None) -> None:
    """Write values to topic and wait for the broker's acknowledgements (records up to 2 MiB)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=2 << 20)
    try:
        for v in values:
            producer.send(topic, value=v, key=key)
        producer.flush()
    finally:
        producer.close()


def produce_keyed(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Write (value, key) pairs to topic and wait for the broker's acknowledgements."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for value, key in records:
            producer.send(topic, value=value, key=key)
        producer.flush()
    finally:
        producer.close()


def read_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[bytes]], bool],
    timeout: float,
    on_timeout: Callable[[], str] = lambda: "",
) -> list[bytes]:
    """Values of `topic` from the beginning until done(values) holds; fails after timeout."""
    consumer = _from_the_beginning(bootstrap, topic)
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while not done(values):
            assert time.monotonic() < deadline, (
                f"gave up on {topic} with {len(values)} records\n{on_timeout()}"
            )
            # poll, not iteration: a topic written without pause (ticks) never ends an iterator
            for records in consumer.poll(timeout_ms=1000).values():
                values += [m.value for m in records]
    finally:
        consumer.close()
    return values


def suspects_in(values: list[bytes]) -> list[Suspect]:
    """The suspects in records of the suspects topic (batches; ticks and results skipped)."""
    out: list[Suspect] = []
    for v in values:
        rec = parse_suspects_record(v)
        if isinstance(rec, SuspectBatch):
            out += rec.suspects
    return out


ROOT = Path(__file__).resolve().parents[2]


class LocalBroker:
    """A broker of its own for a test that stops and starts it (deploy/local/kafka, own port)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self._env = {**os.environ, "SLUICE_KAFKA_PORT": str(port)}

    def _run(self, *args: str) -> str:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "deploy" / "local" / "kafka"), *args],
            env=self._env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def start(self, *, fresh: bool = False) -> None:
        self._run("start", *(["--fresh"] if fresh else []))

    def stop(self) -> None:
        self._run("stop")

    @property
    def run_dir(self) -> Path:
        cache = os.environ.get("SLUICE_CACHE_DIR") or str(
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sluice"
        )
        return Path(cache) / f"kafka-run-{self.port}"

    def remove(self) -> None:
        """Stop it and delete its data: a test's broker leaves nothing behind."""
        self.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def settings_of(env: dict[str, str], monkeypatch: Any) -> Any:
    """The Settings object a process with `env` would build (set through monkeypatch)."""
    from sluice.stream import Settings

    for k, v in env.items():
        if k.startswith("SLUICE_"):
            monkeypatch.setenv(k, v)
    return Settings()


def limit_record_bytes(admin: KafkaAdminClient, topic: str, size: int) -> None:
    """Set the topic's `max.message.bytes`: at 64 the broker refuses every record of Sluice's."""
    from kafka.admin import ConfigResource, ConfigResourceType

    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": str(size)})
    admin.alter_configs([resource])


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (a worker's web port)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, str]:
    """Status and body of GET http://127.0.0.1:port/path; (0, reason) if nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def wait_for_status(
    port: int, path: str, status: int, timeout: float, log: Callable[[], str]
) -> str:
    """The body of GET path once it answers `status`; fails after timeout with the log's tail."""
    deadline = time.monotonic() + timeout
    while (got := http_get(port, path))[0] != status:
        assert time.monotonic() < deadline, (got, log()[-3000:])
        time.sleep(0.5)
    return got[1]


def payment_failures(n: int) -> list[bytes]:
    """n JSON events of one failing service (`ts-pay-service`), a second apart: one alert."""
    return [
        json.dumps(
            {
                "ts": f"2024-06-01T08:00:{i:02d}Z",
                "service": "ts-pay-service",
                "level": "ERROR",
                "message": f"ERROR payment {i} failed: connection refused",
            }
        ).encode()
        for i in range(n)
    ]


def free_port_pair() -> int:
    """A port p with p and p+1 free on 127.0.0.1 (broker and controller)."""
    import socket

    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = int(s.getsockname()[1])
        if p < 65000:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", p + 1))
                except OSError:
                    continue
            return p
    raise AssertionError("no free port pair")


def committed_offsets(
    admin: KafkaAdminClient, group: str, tps: list[TopicPartition]
) -> dict[int, int]:
    """Committed offsets of a group per partition (0 where nothing is committed)."""
    result = admin.list_group_offsets({group: tps})
    groups = result.values() if isinstance(result, dict) else [result]
    out = {tp.partition: 0 for tp in tps}
    for g in groups:
        for tp in tps:
            meta = g.get(tp) if isinstance(g, dict) else None
            off = getattr(meta, "offset", meta) if meta is not None else None
            if isinstance(off, int) and off > 0:
                out[tp.partition] = off
    return out


def read_all(bootstrap: str, topic: str, seconds: float = 3.0) -> list[bytes]:
    """Every value of `topic` that arrives within `seconds` (to check that nothing was written)."""
    consumer = _from_the_beginning(bootstrap, topic)
    values: list[bytes] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values += [m.value for m in records]
    finally:
        consumer.close()
    return values


def numbered_events(path: Path, n: int) -> set[str]:
    """A file of n JSON events with distinct messages; returns the messages."""
    messages = [f"event {i} ok" for i in range(n)]
    path.write_text("".join(json.dumps({"service": "svc", "message": m}) + "\n" for m in messages))
    return set(messages)


@contextmanager
def producing_at(
    env: dict[str, str], data: Path, rate: float, log_path: Path
) -> Iterator[Callable[[], None]]:
    """`sluice produce DATA --rate R` in the background; yields a function that waits for it to
    finish and asserts it succeeded (it is killed if the block ends otherwise)."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluice.stream", "produce", str(data), "--rate", str(rate)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def finished() -> None:
            assert proc.wait(timeout=180) == 0, log_path.read_text(errors="replace")[-3000:]

        try:
            yield finished
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def suspect_messages_until(
    bootstrap: str, env: dict[str, str], expected: set[str], log_path: Path
) -> set[str]:
    """The messages in `suspects`, once every expected one is there (fails after 180 s)."""
    values = read_until(
        bootstrap,
        env["SLUICE_TOPICS__SUSPECTS"],
        lambda v: expected <= {s.event.message for s in suspects_in(v)},
        180,
        lambda: log_path.read_text(errors="replace")[-4000:],
    )
    return {s.event.message for s in suspects_in(values)}


def fault_events() -> list[bytes]:
    """150 s of event time: ts-pay-service refuses connections, ts-order-service's calls fail."""
    lines = []
    for i in range(150):
        ts = (T0 + timedelta(seconds=i)).isoformat()
        lines.append(
            {
                "ts": ts,
                "service": "ts-pay-service",
                "level": "ERROR",
                "message": f"ERROR payment {i} failed: connection refused by database",
            }
        )
        if i % 3 == 0:
            lines.append(
                {
                    "ts": ts,
                    "service": "ts-order-service",
                    "level": "ERROR",
                    "message": f"ERROR order {i}: call to ts-pay-service failed",
                }
            )
        lines.append({"ts": ts, "service": "ts-cart-service", "level": "INFO",
                      "message": f"INFO cart {i} checked out"})  # fmt: skip
    return [json.dumps(x).encode() for x in lines]
