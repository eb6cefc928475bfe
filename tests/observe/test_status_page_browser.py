"""The status page in a real headless Chromium during a real-broker run: a worker analyses a
replayed fault (traces through ts-ui-dashboard -> ts-order-service -> ts-pay-service, the
payment service failing first), and the page it serves shows the latest alert with its service
graph; Chromium's DOM has the graph's nodes, and its screenshot has the root cause's box painted.
The screenshot is saved as bench/results/status-page.png (the README shows it)."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sluice.stream.observe.graph import ROLE_COLOUR
from sluice.stream.observe.status import STATUS_PATH
from sluice.stream.records import Alert
from tests.support.kafka import (
    KafkaEnv,
    SettingsFor,
    free_port,
    http_get,
    produce,
    read_until,
    running_worker,
)

pytestmark = pytest.mark.integration

T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
SCREENSHOT = Path(__file__).resolve().parents[2] / "bench" / "results" / "status-page.png"
CALLS = ("ts-ui-dashboard", "ts-order-service", "ts-pay-service")  # caller -> ... -> callee


def _traced_fault() -> list[bytes]:
    """100 s of requests, each a trace through three services; the payment service fails first
    and its callers fail after it; an unrelated service logs INFO meanwhile."""
    lines = []
    for i in range(100):
        ts = T0 + timedelta(seconds=i)
        for hop, service in enumerate(reversed(CALLS)):  # the callee logs first
            cause = (
                "connection refused by database" if hop == 0 else f"call to {CALLS[3 - hop]} failed"
            )
            line = {"ts": (ts + timedelta(milliseconds=10 * hop)).isoformat(), "service": service,
                    "level": "ERROR", "trace_id": f"trace-{i}", "span_id": f"{i}-{hop}",
                    "message": f"ERROR request {i} failed: {cause}"}  # fmt: skip
            lines.append(line)
        lines.append({"ts": ts.isoformat(), "service": "ts-station-service", "level": "INFO",
                      "message": f"INFO station {i} listed"})  # fmt: skip
    return [json.dumps(x).encode() for x in lines]


HEADLESS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--no-first-run", "--hide-scrollbars")  # fmt: skip


def _chromium(binary: str, *args: str) -> str:
    cmd = [binary, *HEADLESS, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_status_page_shows_the_latest_alert_and_its_graph_in_chromium(
    kafka_bootstrap: str,
    chromium: str,
    tmp_path: Path,
    kafka_env: KafkaEnv,
    settings_for: SettingsFor,
) -> None:
    import numpy as np
    from PIL import Image

    port = free_port()
    env = kafka_env(SLUICE_PIPELINE__IDLE_CLOSE_S="2",
                     SLUICE_WORKER__WEB_PORT=str(port))  # fmt: skip
    settings = settings_for(env)
    log = lambda: (tmp_path / "worker.log").read_text(errors="replace")[-4000:]  # noqa: E731
    url = f"http://127.0.0.1:{port}{STATUS_PATH}"

    with running_worker(env, tmp_path / "worker.log"):
        produce(kafka_bootstrap, settings.topics.events, _traced_fault(), key=b"shop")
        values = read_until(kafka_bootstrap, settings.topics.alerts, lambda v: len(v) >= 2, 180,
                            log)  # fmt: skip
        latest = max((Alert.model_validate_json(v) for v in values), key=lambda a: a.revision)
        deadline = time.monotonic() + 30
        while f"revision {latest.revision} ·" not in http_get(port, STATUS_PATH)[1]:
            assert time.monotonic() < deadline, (http_get(port, STATUS_PATH), log())
            time.sleep(0.5)
        dom = _chromium(chromium, "--dump-dom", url)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        _chromium(chromium, "--window-size=1280,900", f"--screenshot={SCREENSHOT}", url)

    assert latest.report.root_causes[0].service == "ts-pay-service"
    # The heuristic analyst reads edges from the order in which services first log a flagged
    # line; with error lines only, that is the order the failure travelled (callee first).
    pairs = {frozenset((e.source, e.target)) for e in latest.report.service_graph}
    assert pairs >= {frozenset(CALLS[:2]), frozenset(CALLS[1:])}
    assert f'data-fingerprint="{latest.fingerprint}"' in dom
    assert latest.report.title in dom
    assert '<g class="node root_cause" data-service="ts-pay-service">' in dom
    assert dom.count('class="edge"') >= 2
    assert "throughput" in dom and "forwarded to analysis" in dom

    pixels = np.asarray(Image.open(SCREENSHOT).convert("RGB"))
    red = [int(ROLE_COLOUR["root_cause"][i : i + 2], 16) for i in (1, 3, 5)]
    painted = int((pixels == red).all(axis=-1).sum())
    assert painted >= 3000, painted  # the root cause's 150x34 box, less its label
