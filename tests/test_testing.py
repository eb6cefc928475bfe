"""`sluice.stream.testing`: the doubles users test their own setup with do what they say."""

from __future__ import annotations

import json

from pydantic import SecretStr

import sluice.stream.testing as testing
from sluice.models.analyst import LLMSettings, OpenAIAnalyst
from sluice.stream import PipelineSettings
from sluice.stream.testing import FakeLLM, KeywordFilter, scan_lines


def _lines() -> list[str]:
    ok = [
        json.dumps(
            {"ts": f"2024-06-01T08:00:{i:02d}Z", "service": "web", "message": f"GET /{i} 200"}
        )
        for i in range(40)
    ]
    bad = [
        json.dumps({"ts": f"2024-06-01T08:01:{i:02d}Z", "service": "db", "level": "ERROR",
                    "message": f"timeout after 30 s: connection refused, pool {i % 3}"})
        for i in range(20)
    ]  # fmt: skip
    return ok + bad + ["not json, not a known format: stays a plain line"]


def test_scan_lines_runs_the_whole_pipeline_offline() -> None:
    result = scan_lines(_lines(), PipelineSettings(window_s=30))
    assert result.events == 61
    assert {s for s, reason in result.forwarded if reason == "model"} >= {"lines:50", "lines:60"}
    assert result.alerts and all(a.provenance.analysis == "heuristic" for a in result.alerts)
    assert any(a.report.severity != "info" for a in result.alerts)


def test_scan_lines_with_the_real_client_against_the_fake_llm() -> None:
    server = FakeLLM().start()
    try:
        cfg = LLMSettings(base_url=server.base_url, api_key=SecretStr("k"), model="fake-1")
        result = scan_lines(_lines(), PipelineSettings(window_s=30), analyst=OpenAIAnalyst(cfg))
    finally:
        server.stop()
    assert server.requests, "the analyst called the fake server over HTTP"
    assert any(a.provenance.analysis == "llm" for a in result.alerts)
    assert {c.service for a in result.alerts for c in a.report.root_causes} == {"db"}


def test_the_keyword_filter_flags_by_its_words_only() -> None:
    flags = KeywordFilter(("refused",)).assess(["connection refused", "ERROR disk full"])
    assert flags.flagged.tolist() == [True, False]


def test_the_public_names_load_on_first_use() -> None:
    assert set(dir(testing)) == set(testing.__all__)
    assert testing.MemoryStore().get("x") is None
