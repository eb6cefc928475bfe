"""The LLM side against real servers: llama-cpp-python's OpenAI-compatible server with a real
model (SmolLM2-135M-Instruct, the `local_llm` fixture), an endpoint that never answers, and a
dead port. Through the `sluice` command as a person runs it; quality is not asked of a 135M
model: acceptance, schema validity, limits and time are.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from sluice.models.analyst import Bundle, BundleEvent, LLMSettings, OpenAIAnalyst
from sluice.models.analyst._check import EndpointCheck, check_endpoint
from sluice.stream.records import Alert
from sluice.stream.testing import FakeLLM

pytestmark = pytest.mark.local_llm


def sluice(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """`sluice ARGS` with only the LLM settings given (no SLUICE_* of the caller's shell)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.stream", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def endpoint(url: str, model: str = "smollm2") -> dict[str, str]:
    return {
        "SLUICE_LLM__BASE_URL": url,
        "SLUICE_LLM__MODEL": model,
        "SLUICE_LLM__API_KEY": "sk-local-not-checked",
    }


def windows_closed(stderr: str) -> int:
    return sum(
        int(line.rsplit(" ", 1)[1])
        for line in stderr.splitlines()
        if line.strip().startswith("sluice_analysis_windows_closed_total")
    )


@dataclass
class Background:
    """A `sluice` command left running while other tests run; `ended` when it exited."""

    started: float
    ended: float | None = None
    run: subprocess.CompletedProcess[str] | None = None


@pytest.fixture(scope="module")
def silent_scan() -> Iterator[Background]:
    """`scan --demo` against an endpoint that accepts connections (the kernel's backlog) and
    never answers, started once the module's first test asks for it: it mostly waits, so it
    waits beside the real model's tests instead of after them."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(256)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        bg = Background(time.monotonic())

        def go() -> None:
            bg.run = sluice(endpoint(url), "scan", "--demo", "--json", "--metrics", timeout=200)
            bg.ended = time.monotonic()

        thread = threading.Thread(target=go, daemon=True)
        thread.start()
        yield bg
        thread.join(220)


@pytest.mark.usefixtures("silent_scan")
def test_scan_demo_gets_schema_valid_reports_from_a_real_model(local_llm: str) -> None:
    """No setting but the endpoint, model and key, and the timeout the README gives for models
    served on CPU: the mode is negotiated (json_schema refused, llama.cpp's schema form taken),
    the context learnt from the server, and at least one window's report comes from the model,
    valid against the schema, or its two schema-valid answers named what the bundle does not
    hold and the ranking's report replaced them (`_ground`: what a 135M model often writes; either
    way the model answered in the schema). (The default 30 s is for hosted endpoints: each prompt
    names its fence at random, so the model's answer and its length vary; here the first
    window's call took 11-28 s in five runs and over 30 s in a sixth, which went offline, as it
    should.)"""
    started = time.monotonic()
    env = {**endpoint(local_llm), "SLUICE_LLM__TIMEOUT_S": "120"}
    run = sluice(env, "--log-level", "info", "scan", "--demo", "--json", "--metrics")
    took = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-3000:]
    alerts = [Alert.model_validate_json(line) for line in run.stdout.splitlines()]
    kinds = Counter(
        (a.provenance.analysis, a.provenance.error_category) for a in alerts
    )  # fmt: skip
    print(f"scan --demo with SmolLM2 in {took:.0f} s: {dict(kinds)}")
    ungrounded = sum(
        a.provenance.analysis == "degraded"
        and "ungrounded answer after one repair" in (a.provenance.error or "")
        for a in alerts
    )
    assert kinds[("llm", None)] + ungrounded >= 1, run.stderr[-3000:]
    assert "structured output json_object_schema" in run.stderr
    per_fp = Counter(a.fingerprint for a in alerts)
    assert max(per_fp.values()) <= windows_closed(run.stderr) + 1


def test_a_prompt_over_the_context_window_is_cut_before_it_is_sent(local_llm: str) -> None:
    """SmolLM2 served with a 2048-token context, a bundle of 300 distinct templates: the digest
    is cut to fit, so the server never refuses it (a refusal would shrink the known window)."""
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    words = ["".join(chr(97 + (i // 26**k) % 26) for k in range(3)) for i in range(300)]
    events = [  # 300 templates: the letters differ (digits are masked in a template)
        BundleEvent(
            f"svc-{i % 7}",
            f"ERROR job {w} step failed: code E{i}",
            "ERROR",
            t0 + timedelta(seconds=i),
        )
        for i, w in enumerate(words)
    ]
    cfg = LLMSettings(
        base_url=local_llm, model="smollm2", context_window=2048, timeout_s=120, max_retries=0,
        max_completion_tokens=200,  # a short answer: what is checked is what was sent
    )  # fmt: skip
    a = OpenAIAnalyst(cfg)
    out = asyncio.run(a.analyze(Bundle("big", events)))
    print(f"{out.provenance.analysis} {out.provenance.error} {out.provenance.latency_ms:.0f} ms")
    assert a.context_window == 2048  # never refused: nothing learnt from an error (1536)
    # the call and at most its repair, beside the one refused json_schema: no overlong prompt
    assert a.usage.calls - a.usage.format_rejections <= 2
    assert out.provenance.analysis == "llm" or out.provenance.error_category == "invalid_output"
    if out.provenance.analysis == "llm":
        assert out.provenance.templates_truncated > 0
        assert out.provenance.prompt_tokens < 2048


def test_llm_check_says_what_each_endpoint_offers(local_llm: str, llm: FakeLLM) -> None:
    """The real server: usable, in llama.cpp's schema form (the 135M model may still answer
    off-schema: exit 1, said as such); the test server: strict json_schema; a dead port: a
    connection failure with what to check."""
    real = sluice(endpoint(local_llm), "llm", "check")
    print(real.stdout)
    assert real.returncode in (0, 1), real.stdout + real.stderr[-2000:]
    assert "json_object_schema (1 stronger mode(s) refused" in real.stdout
    assert "smollm2: served" in real.stdout

    # the test server in-process (each `sluice` start costs seconds of imports)
    def check(url: str, model: str = "fake-model") -> EndpointCheck:
        cfg = LLMSettings.model_validate({"base_url": url, "model": model, "api_key": "sk-x-7"})
        return asyncio.run(check_endpoint(cfg))

    fake = check(llm.base_url)
    assert fake.verdict == "ok" and fake.mode == "json_schema", fake.lines
    assert "OK: Sluice will use fake-model with structured output json_schema" in fake.lines[-1]
    llm.context_window = 4096
    assert check(llm.base_url, "fake-model-2").context_window == 4096

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = sluice(endpoint(f"http://127.0.0.1:{port}/v1"), "llm", "check")  # exit status 2
    assert dead.returncode == 2
    assert "FAILED: cannot connect" in dead.stdout and "SLUICE_LLM__BASE_URL" in dead.stdout
    assert "sk-local-not-checked" not in dead.stdout + dead.stderr


def test_scan_against_an_endpoint_that_never_answers_finishes_in_90s_once_per_window(
    silent_scan: Background,
) -> None:
    """Default settings: the first call times out (30 s), the scan says in one line
    that the rest is analysed offline, and each window's degraded alert comes once."""
    deadline = time.monotonic() + 200
    while silent_scan.run is None and time.monotonic() < deadline:
        time.sleep(0.5)
    run = silent_scan.run
    assert run is not None and silent_scan.ended is not None, "still running after 200 s"
    took = silent_scan.ended - silent_scan.started
    assert run.returncode == 0, run.stderr[-3000:]
    print(f"scan --demo against a silent endpoint: {took:.0f} s")
    assert took < 90
    notes = [x for x in run.stderr.splitlines() if "analysed offline at once" in x]
    assert len(notes) == 1
    alerts = [Alert.model_validate_json(line) for line in run.stdout.splitlines()]
    assert alerts and all(a.provenance.analysis == "degraded" for a in alerts)
    assert len(alerts) == windows_closed(run.stderr)  # one revision per window, none per retry
