"""The learning loop on the real broker: feedback -> `sluice retrain` -> `models` -> hot swap.

The LLM is the local OpenAI-compatible test server through the real `openai` client; it calls a
template relevant when it mentions error, exception or timeout. Model v1 was trained to ignore
timeouts, so the LLM's verdicts on audit samples teach v2 what v1 misses.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaProducer

from sluice.models.filter import Example, FeatureSpec, FilterModel, train
from sluice.stream.learning.registry import Activation, ModelWatcher, publish_model, read_registry
from sluice.stream.records import Feedback, SuspectBatch, parse_suspects_record
from sluice.stream.testing import FakeLLM
from tests.support.kafka import (
    KafkaEnv,
    SettingsFor,
    free_port,
    http_get,
    produce_keyed,
    read_until,
    running_worker,
    sluice,
)

pytestmark = pytest.mark.integration

NOUNS = ["order", "invoice", "cart", "session", "profile", "report", "ticket", "shipment"]
VERBS = ["loaded", "saved", "synced", "rendered", "queued", "checked", "priced", "merged"]
SERVICES = ["api", "pay", "cart", "auth", "ship", "mail"]


def _lines(kind: str) -> list[str]:
    """One line per (noun, verb): 64 templates per kind."""
    fmt = {
        "info": "INFO {n} {v} in {i} ms",
        "exception": "ERROR {n} {v} raised exception code {i}",
        "timeout": "WARN {n} {v} timeout after {i} ms",
    }[kind]
    return [fmt.format(n=n, v=v, i="{i}") for n in NOUNS for v in VERBS]


def _v1() -> FilterModel:
    """A model that flags exceptions and takes timeouts for routine (what v2 must unlearn)."""
    rng = random.Random(1)
    ex = [
        Example(t.format(i=rng.randint(1, 999)), kind == "exception", 1.0, "dataset")
        for kind in ("info", "exception", "timeout")
        for t in _lines(kind)
        for _ in range(3)
    ]
    return train(ex, target_recall=0.99, created_by="test v1")


def _events(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    kinds = {k: _lines(k) for k in ("info", "exception", "timeout")}
    out = []
    for _ in range(n):
        kind = rng.choices(["info", "exception", "timeout"], [8, 1, 1])[0]
        service = rng.choice(SERVICES)
        msg = rng.choice(kinds[kind]).format(i=rng.randint(1, 999))
        out.append((json.dumps({"service": service, "message": msg}).encode(), service.encode()))
    return out


def _scrape(port: int, version: str) -> str:
    """The worker's /metrics once it reports `version` in use after 3 swaps (start, v2, back)."""
    text = ""
    for _ in range(100):
        status, body = http_get(port, "/metrics")
        text = body if status == 200 else text
        if (
            f'sluice_filter_model_info{{version="{version}"}}' in text
            and "recall_estimate{" in text
        ):
            return text
        time.sleep(0.3)
    return text


def _until_swapped(logs: tuple[Path, ...], swap: str, timeout: float = 60.0) -> None:
    """Wait until every worker logged the swap (`old -> new`; a worker swaps between fetches,
    also idle ones): events produced after it are scored by the new model on every partition,
    not only on the partition of the first worker to swap."""
    deadline = time.monotonic() + timeout
    while not all(swap in p.read_text(errors="replace") for p in logs):
        assert time.monotonic() < deadline, f"not every worker logged {swap!r}"
        time.sleep(0.3)


def _scored(values: list[bytes]) -> dict[tuple[int, int], set[str]]:
    """(partition, offset) of each event in the suspects -> the model versions that scored it.

    Also checks that every suspects message was scored by one model (no batch split by a swap).
    """
    seen: dict[tuple[int, int], set[str]] = defaultdict(set)
    for v in values:
        rec = parse_suspects_record(v)
        if not isinstance(rec, SuspectBatch):
            continue
        assert len({s.model_version for s in rec.suspects}) == 1, "a batch scored by two models"
        for s in rec.suspects:
            _topic, p, o = (s.event.source or "").rsplit(":", 2)
            seen[(int(p), int(o))].add(s.model_version)
    return seen


def test_retrain_publishes_v2_workers_swap_and_rollback_returns_v1(
    kafka_bootstrap: str,
    tmp_path: Path,
    llm: FakeLLM,
    kafka_env: KafkaEnv,
    settings_for: SettingsFor,
) -> None:
    env = kafka_env(
        SLUICE_LLM__BASE_URL=llm.base_url,
        SLUICE_LLM__PROMPT_TOKEN_BUDGET="60000",
        SLUICE_LLM__EXAMPLES_PER_TEMPLATE="1",
        SLUICE_LLM__REQUESTS_PER_MINUTE="6000",
        SLUICE_PIPELINE__AUDIT_RATE="1.0",  # every event reaches the suspects: offsets checkable
        SLUICE_PIPELINE__IDLE_CLOSE_S="2",
        SLUICE_PIPELINE__BATCH_SIZE="500",
        SLUICE_WORKER__WEB_PORT=str(free_port()),
    )
    settings = settings_for(env)
    v1 = _v1()
    publish_model(settings, v1, {"note": "test v1"}, activate_as="promote", by="test")
    events_t, suspects_t = env["SLUICE_TOPICS__EVENTS"], env["SLUICE_TOPICS__SUSPECTS"]
    log_path = tmp_path / "worker.log"
    log = lambda: log_path.read_text(errors="replace")[-4000:]  # noqa: E731
    phases = [_events(1500, seed) for seed in (1, 2, 3)]
    total = 0

    def wait_for(n: int, version: str) -> dict[tuple[int, int], set[str]]:
        def done(values: list[bytes]) -> bool:
            seen = _scored(values)
            return len(seen) >= n and any(version in vs for vs in seen.values())

        return _scored(read_until(kafka_bootstrap, suspects_t, done, 120, log))

    # A second worker: each owns one of the two partitions, and each must swap on its own.
    env2 = {
        **env,
        "SLUICE_WORKER__DATA_DIR": str(tmp_path / "worker2-data"),
        "SLUICE_WORKER__WEB_PORT": str(free_port()),
    }
    log2 = tmp_path / "worker2.log"
    with running_worker(env, log_path), running_worker(env2, log2):
        produce_keyed(kafka_bootstrap, events_t, phases[0])
        total += len(phases[0])
        wait_for(total, v1.version)

        def labelled(values: list[bytes]) -> bool:
            keys = {Feedback.model_validate_json(v).key() for v in values}
            return len(keys) >= 150  # most of the 192 templates have a verdict

        read_until(kafka_bootstrap, env["SLUICE_TOPICS__FEEDBACK"], labelled, 120, log)
        out = sluice(env, "retrain", "--report", str(tmp_path / "report"))
        assert "held-out labels" in out and "decision: publish" in out  # the table, both models
        m = re.search(r"published (\w+) \(parent (\w+)\)", out)
        assert m, out
        v2 = m.group(1)
        assert (tmp_path / "report" / f"retrain-{v2}.png").stat().st_size > 10_000
        assert m.group(2) == v1.version and v2 != v1.version

        _until_swapped((log_path, log2), f"-> {v2}")  # both workers, each on its own
        produce_keyed(kafka_bootstrap, events_t, phases[1])
        total += len(phases[1])
        wait_for(total, v2)  # the running worker took v2: no restart

        assert "rolled back to " + v1.version in sluice(env, "model", "rollback")
        _until_swapped((log_path, log2), f"{v2} -> {v1.version}")
        produce_keyed(kafka_bootstrap, events_t, phases[2])
        total += len(phases[2])

        def back_on_v1(values: list[bytes]) -> bool:
            seen = _scored(values)
            return len(seen) >= total and v1.version in seen[max(seen)]

        seen = _scored(read_until(kafka_bootstrap, suspects_t, back_on_v1, 120, log))
        metrics = _scrape(int(env["SLUICE_WORKER__WEB_PORT"]), v1.version)

    # No offset skipped across the swaps: every event of every partition was scored.
    by_partition: dict[int, list[int]] = defaultdict(list)
    for p, o in seen:
        by_partition[p].append(o)
    assert sum(len(v) for v in by_partition.values()) == total
    for offsets in by_partition.values():
        assert sorted(offsets) == list(range(len(offsets)))
    # Per partition the versions run v1 ... v2 ... v1, never back and forth within a phase.
    for p, offsets in by_partition.items():
        runs = [min(seen[(p, o)]) for o in sorted(offsets)]
        collapsed = [v for i, v in enumerate(runs) if i == 0 or runs[i - 1] != v]
        assert collapsed[0] == v1.version and v2 in collapsed, collapsed
    for worker_log in (log_path, log2):  # both workers took v2, then v1 again
        text = worker_log.read_text()
        assert f"-> {v2}" in text and f"{v2} -> {v1.version}" in text, text[-3000:]
    # The worker's /metrics: the active version, the swaps, v1's audit-based recall estimate.
    assert f'sluice_filter_model_info{{version="{v1.version}"}} 1.0' in metrics
    assert re.search(r"^sluice_filter_model_swaps_total (\d+)", metrics, re.M)
    assert int(re.search(r"^sluice_filter_model_swaps_total (\d+)", metrics, re.M)[1]) >= 3
    m_est = re.search(
        rf'^sluice_filter_recall_estimate{{version="{v1.version}"}} (\S+)', metrics, re.M
    )
    assert m_est and 0 < float(m_est[1]) < 0.95

    listing = sluice(env, "model", "list")
    assert f"* {v1.version}" in listing and v2 in listing
    out = sluice(env, "model", "show", v1.version[:8])
    shown = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert shown["active"] is True
    est = shown["recall_estimate"]
    assert est is not None and est["audited"] > 0  # audit samples of v1 were labelled by the LLM
    assert est["low"] <= est["recall"] <= est["high"]
    assert est["recall"] < 0.95  # v1 misses the timeouts, and the audit sees it

    # A person labels an alert's evidence: the feedback topic gets `human` records for it.
    alert = json.loads(
        read_until(kafka_bootstrap, env["SLUICE_TOPICS__ALERTS"], lambda v: len(v) > 0, 30)[0]
    )
    tid, template = next(iter(alert["evidence"].items()))
    out = sluice(env, "label", alert["fingerprint"][:10], "--not-incident", "--template", tid,
                 "--by", "oncall")  # fmt: skip
    assert f"labelled 1 templates of alert {alert['fingerprint']}" in out
    human = [
        f
        for f in map(
            Feedback.model_validate_json,
            read_until(
                kafka_bootstrap,
                env["SLUICE_TOPICS__FEEDBACK"],
                lambda v: any(b'"human"' in x for x in v),
                30,
            ),
        )
        if f.source == "human"
    ]
    assert [(f.template, f.label, f.by) for f in human] == [(template, False, "oncall")]


def test_a_model_over_1_mib_travels_and_bad_records_are_rejected(
    kafka_bootstrap: str,
    kafka_env: KafkaEnv,
    settings_for: SettingsFor,
) -> None:
    env = kafka_env()
    settings = settings_for(env)
    ex = [Example(f"ERROR disk {i} failed", True) for i in range(20)] + [
        Example(f"INFO disk {i} ok", False) for i in range(20)
    ]
    big = train(ex, spec=FeatureSpec(n_buckets=2**19))  # 2 MiB of weights
    assert len(big.data) > 2 * 1024 * 1024

    got: list[tuple[FilterModel, Activation]] = []

    async def watch() -> ModelWatcher:
        watcher = ModelWatcher(settings, lambda m, a: got.append((m, a)))
        task = asyncio.create_task(watcher.run())
        await asyncio.wait_for(watcher.ready.wait(), 30)
        assert got == []  # nothing published yet: the configured model stays
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        bad = Activation(version="deadbeef", reason="promote", by="test", at=big.meta.created_at)
        producer.send(settings.topics.models, key=b"active", value=b"not an onnx model",
                      headers=[("sluice-activation", bad.model_dump_json().encode())])  # fmt: skip
        producer.flush()
        producer.close()
        await asyncio.to_thread(
            publish_model, settings, big, {"note": "big"}, activate_as="promote", by="test"
        )
        for _ in range(300):
            if got:
                break
            await asyncio.sleep(0.1)
        watcher.stop()
        await task
        return watcher

    watcher = asyncio.run(watch())
    assert [m.version for m, _ in got] == [big.version]  # the bad record changed nothing
    assert got[0][0].data == big.data
    assert watcher.rejected == 1
    reg = read_registry(settings)
    assert reg.active is not None and reg.active.version == big.version
    assert reg.entries[big.version].data == big.data
    assert len(reg.rejected) == 1 and "not a loadable ONNX model" in reg.rejected[0]


def test_retrain_watch_retrains_when_enough_new_labels_arrive(
    kafka_bootstrap: str,
    tmp_path: Path,
    kafka_env: KafkaEnv,
    settings_for: SettingsFor,
) -> None:
    env = kafka_env(SLUICE_RETRAIN__MIN_HOLDOUT="2")
    settings = settings_for(env)
    publish_model(settings, _v1(), {"note": "test v1"}, activate_as="promote", by="test")
    rng = random.Random(5)

    def labels(n: int, minute: int) -> None:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        for i in range(n):
            kind = rng.choice(["info", "exception", "timeout"])
            template = rng.choice(_lines(kind)).format(i="<num>").lower()
            at = datetime(2026, 1, 1, 0, minute + i // 60, i % 60, tzinfo=UTC)
            f = Feedback(template=template, text=template, label=kind != "info", source="llm",
                         weight=1.0, model_version="v1", score=None, at=at)  # fmt: skip
            producer.send(settings.topics.feedback, key=f.key().encode(), value=f.to_bytes())
        producer.flush()
        producer.close()

    labels(60, 0)
    log_path = tmp_path / "watch.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluice.stream", "retrain", "--watch", "--min-new", "20"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            while "watching" not in log_path.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.5)
            labels(25, 10)
            while log_path.read_text().count("decision:") < 2:
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    out = log_path.read_text()
    assert "25 new labels" in out
    assert "labelled templates" in out
