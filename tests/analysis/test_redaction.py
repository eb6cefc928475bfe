"""Redaction: secrets and personal data never leave for the LLM or the feedback topic."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.models.analyst import Analysis, Bundle
from sluice.models.filter import KeywordFilter, normalize_batch
from sluice.stream import PipelineSettings
from sluice.stream.analysis import AnalysisState, MemoryStore, bundle_of
from sluice.stream.analysis.redaction import Redactor
from sluice.stream.records import Alert, Feedback, Suspect
from sluice.stream.scan import scan
from sluice.stream.testing import FakeLLM
from tests.support.kafka import KafkaEnv, produce, read_until, running_worker, sluice

#: Seeded into log lines; none of them may reach the LLM or `feedback`.
SEEDS = {
    "bearer": "Authorization: Bearer eyZ0bGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9abc",
    "url_credentials": "postgres://billing:Tr0ub4dor-3@db-1:5432/pay",
    "api_key": "sk-live-4eC39HqLyjWDarjtT1zdp7dc",
    "credential": "password=correct-horse-battery",
    "email": "alice.smith@example.org",
    "card": "4111 1111 1111 1111",
    "employee": "EMP-004711",
}
SECRETS = [
    "eyZ0bGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9abc",
    "Tr0ub4dor-3",
    "sk-live-4eC39HqLyjWDarjtT1zdp7dc",
    "correct-horse-battery",
    "alice.smith@example.org",
    "4111 1111 1111 1111",
    "EMP-004711",
]
USER_PATTERNS = {"employee": r"EMP-\d{6}"}


def test_each_kind_gets_its_typed_placeholder_and_is_counted() -> None:
    r = Redactor(USER_PATTERNS)
    out = {name: r(f"ERROR request failed: {text} end") for name, text in SEEDS.items()}
    assert "Bearer <secret:bearer>" in out["bearer"]
    assert "postgres://<secret:url_credentials>@db-1:5432/pay" in out["url_credentials"]
    assert "<secret:api_key>" in out["api_key"]
    assert "password=<secret:credential>" in out["credential"]
    assert "<email>" in out["email"] and "<card>" in out["card"]
    assert "<employee>" in out["employee"]
    assert not any(s in v for s in SECRETS for v in out.values())
    assert dict(r.counts) == dict.fromkeys(SEEDS, 1)


def test_what_is_not_secret_stays() -> None:
    r = Redactor()
    text = "order 1234567890123 took 4111 1111 1111 1112 ms from 10.0.0.1 (trace 9f8e7d6c)"
    assert r(text) == text  # a 13-digit id and a non-Luhn digit run are not cards
    # a systemd unit's instance is not an e-mail address; an address under such a name still is
    units = "systemd[1]: postgresql@15-main.service: Consumed 2min CPU; getty@tty1.service up"
    assert r(units) == units
    assert not r.counts
    assert r("to ops@mail.service.example.com") == "to <email>"


def test_placeholders_keep_template_grouping() -> None:
    r = Redactor()
    lines = [f"ERROR login failed for {u}@example.com token={t}" for u, t in [("a", "x1"),
             ("bob", "Zz9-long-token"), ("c.d", "q")]]  # fmt: skip
    assert len(set(normalize_batch([r(x) for x in lines]))) == 1


@given(st.text(max_size=300))
def test_redaction_never_raises_and_is_idempotent(text: str) -> None:
    r = Redactor(USER_PATTERNS)
    once = r(text)
    assert r(once) == once


def _suspect(i: int, text: str, ts: datetime) -> Suspect:
    from sluice.stream.records import Event

    e = Event(ts=ts, service="pay", level="ERROR", message=text, source=f"f:{i}")
    return Suspect(
        event=e, score=0.9, model_version="m1", audit=False, sampling_probability=1.0, scope="s"
    )


def test_window_bundle_and_feedback_are_redacted_but_the_filter_saw_the_raw_line() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    lines = [f"ERROR payment failed: {text}" for text in SEEDS.values()]
    cfg = PipelineSettings(redact_patterns=USER_PATTERNS)
    seen: list[str] = []

    class Recording(KeywordFilter):
        def assess(self, texts):  # type: ignore[no-untyped-def]
            seen.extend(texts)
            return super().assess(texts)

    from sluice.models.analyst import HeuristicAnalyst

    sent: list[Bundle] = []

    class Spy(HeuristicAnalyst):
        async def analyze(self, bundle: Bundle) -> Analysis:
            sent.append(bundle)
            return await super().analyze(bundle)

    records = [
        (json.dumps({"message": x, "ts": t0.isoformat()}).encode(), None, "f") for x in lines
    ]
    result = asyncio.run(scan(records, cfg, Recording(), Spy(), lambda: t0))
    assert seen == lines  # the filter scores the raw line
    prompt_text = " ".join(e.text for b in sent for e in b.events)
    feedback_text = " ".join(f.model_dump_json() for f in result.feedback)
    for secret in SECRETS:
        assert secret not in prompt_text and secret not in feedback_text
    assert result.feedback and result.alerts
    assert result.alerts[0].report and sent[0].redactions == dict.fromkeys(SEEDS, 1)
    state = AnalysisState(PipelineSettings(redact=False), MemoryStore(), lambda: 0.0)
    state.add("s", [_suspect(0, lines[0], t0)])
    state.close_all("s")
    ((seq, _),) = state.due("s", ignore_wait=True)
    assert SECRETS[0] in bundle_of(state.window("s", seq)).events[0].text  # opted out: raw


# -- the real pipeline ---------------------------------------------------------------------------


@pytest.mark.integration
def test_no_seeded_secret_reaches_the_llm_or_the_feedback_topic(
    kafka_bootstrap: str,
    tmp_path: Path,
    llm: FakeLLM,
    kafka_env: KafkaEnv,
) -> None:
    env = kafka_env(
        create=False,
        SLUICE_LLM__BASE_URL=llm.base_url,
        SLUICE_PIPELINE__IDLE_CLOSE_S="2",
        SLUICE_PIPELINE__AUDIT_RATE="1",
        SLUICE_PIPELINE__REDACT_PATTERNS=json.dumps(USER_PATTERNS),
    )
    t0 = datetime(2024, 1, 1, 12, tzinfo=UTC)
    lines = [
        json.dumps(
            {
                "ts": (t0 + timedelta(seconds=i)).isoformat(),
                "service": "pay",
                "level": "ERROR",
                "message": f"ERROR payment {i} failed: {text}",
            }
        ).encode()
        for i, text in enumerate(SEEDS.values())
    ]
    with running_worker(env, tmp_path / "worker.log"):
        produce(kafka_bootstrap, env["SLUICE_TOPICS__EVENTS"], lines, key=b"pay")
        log = lambda: (tmp_path / "worker.log").read_text(errors="replace")[-4000:]  # noqa: E731
        alerts = read_until(
            kafka_bootstrap, env["SLUICE_TOPICS__ALERTS"], lambda v: len(v) > 0, 90, log
        )
        feedback = read_until(
            kafka_bootstrap, env["SLUICE_TOPICS__FEEDBACK"], lambda v: len(v) > 0, 30, log
        )
    assert llm.requests, "the LLM was never asked"
    sent = json.dumps(llm.requests)
    stored = b" ".join(feedback).decode()
    for secret in SECRETS:
        assert secret not in sent and secret not in stored, secret
    assert "<secret:bearer>" in sent and "<email>" in sent and "<employee>" in sent
    fb = [Feedback.model_validate_json(v) for v in feedback]
    assert any("<card>" in f.text for f in fb)
    alert = Alert.model_validate_json(alerts[0])
    assert alert.provenance.analysis == "llm"
    assert alert.provenance.redactions == dict.fromkeys(SEEDS, 1)
    assert sluice(env, "topics", "describe")  # the worker's topics exist and answer
