"""Pure logic of the analyst: compression, heuristic analysis, breaker, backoff, schema."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.models.analyst import (
    Bundle,
    BundleEvent,
    CircuitBreaker,
    HeuristicAnalyst,
    LLMAnswer,
    backoff_delay,
    compress,
    create_analyst,
    strict_json_schema,
    token_counter,
)
from sluice.models.analyst import LLMSettings as Cfg

T0 = datetime(2023, 1, 29, 8, 52, tzinfo=UTC)


def chain_bundle() -> Bundle:
    """gateway -> order -> contacts; contacts fails, its callers log the consequences."""
    ev: list[BundleEvent] = []
    for i in range(20):
        t = T0 + timedelta(seconds=i)
        ms = timedelta(milliseconds=1)
        tr = f"trace{i}"
        ev += [
            BundleEvent("gateway", f"INFO GET /orders/{i}", "INFO", t, tr),
            BundleEvent("order", f"INFO create order {i}", "INFO", t + ms, tr),
            BundleEvent(
                "contacts",
                f"ERROR query contact {i} failed: java.sql.SQLException",
                "ERROR",
                t + 2 * ms,
                tr,
            ),
            BundleEvent(
                "order",
                f"ERROR contacts call for order {i} failed with status 500",
                "ERROR",
                t + 3 * ms,
                tr,
            ),
            BundleEvent(
                "gateway",
                f"WARN upstream order returned 500 for request {i}",
                "WARN",
                t + 4 * ms,
                tr,
            ),
        ]
    ev += [BundleEvent("billing", f"INFO invoice {i} sent", "INFO", T0) for i in range(200)]
    return Bundle("shop", ev, filter_version="f1")


def test_compress_groups_orders_and_derives_the_call_graph() -> None:
    d = compress(chain_bundle(), budget_tokens=4000)
    assert d.n_events == 300
    assert len(d.groups) == 6  # one group per template, not per line
    assert [g.severity for g in d.groups] == sorted((g.severity for g in d.groups), reverse=True)
    assert d.groups[0].levels["ERROR"] > 0 and d.groups[-1].template.startswith("info")
    assert ("gateway", "order", 20) in d.edges and ("order", "contacts", 20) in d.edges
    assert d.truncated == 0 and d.prompt_tokens <= 4000 and d.tokens_exact
    raw = token_counter().count("\n".join(e.text for e in chain_bundle().events))
    assert raw / d.prompt_tokens > 3  # grouping compresses


def test_compress_respects_the_budget_and_records_truncation() -> None:
    events = [
        BundleEvent(
            f"svc{i % 7}",
            f"ERROR distinct failure kind {chr(65 + i % 26)}{chr(65 + i // 26)} in module m{i}",
            "ERROR",
        )
        for i in range(400)
    ]
    d = compress(Bundle("s", events), budget_tokens=600)
    assert d.prompt_tokens <= 600
    assert d.truncated > 0 and len(d.included) + d.truncated == len(d.groups)
    assert f"{d.truncated} more templates" in d.prompt


@given(st.text(max_size=200))
def test_log_text_cannot_close_the_fence(text: str) -> None:
    b = Bundle("s", [BundleEvent("svc", text, "ERROR")])
    d = compress(b, budget_tokens=2000)
    # the fence string occurs exactly twice: opening and closing marker
    assert d.prompt.count(d.fence) == 2
    d2 = compress(Bundle("s", [BundleEvent("svc", f"x </{d.fence}> y", "ERROR")]), 2000)
    assert d2.prompt.count(d2.fence) == 2


def test_heuristic_names_the_deepest_failing_service() -> None:
    out = asyncio.run(HeuristicAnalyst().analyze(chain_bundle()))
    r = out.report
    assert out.provenance.analysis == "heuristic"
    assert r.root_causes[0].service == "contacts"
    roles = {a.service: a.role for a in r.affected_services}
    assert roles["contacts"] == "root_cause" and roles["order"] == "impacted"
    assert "billing" not in roles  # only INFO noise there
    assert {(e.source, e.target) for e in r.service_graph} >= {("order", "contacts")}
    assert r.severity == "high" and r.is_incident
    verdicts = {out.templates[v.template_id]: v.relevant for v in out.verdicts}
    assert verdicts[next(t for t in verdicts if t.startswith("info invoice"))] is False
    # two ERROR templates; a WARN without alarm words is not evidence on its own
    assert sum(verdicts.values()) == 2


def test_heuristic_on_quiet_bundle_reports_no_incident() -> None:
    b = Bundle("s", [BundleEvent("a", f"INFO all good {i}", "INFO") for i in range(5)])
    out = asyncio.run(HeuristicAnalyst().analyze(b))
    assert not out.report.is_incident and out.report.severity == "info"
    assert out.report.root_causes == []


def test_fingerprint_is_stable_across_wording() -> None:
    a = asyncio.run(HeuristicAnalyst().analyze(chain_bundle())).report
    b = a.model_copy(update={"title": "other words", "summary": "changed"})
    assert a.fingerprint() == b.fingerprint()
    c = a.model_copy(update={"scope": "other-scope"})
    assert a.fingerprint() != c.fingerprint()


def test_breaker_states() -> None:
    now = [0.0]
    br = CircuitBreaker(failures=3, reset_s=10, clock=lambda: now[0])
    for _ in range(2):
        br.failure()
    assert br.state == "closed" and br.allow()
    br.failure()
    assert br.state == "open" and not br.allow()
    now[0] = 10.0
    assert br.state == "half_open"
    assert br.allow() and not br.allow()  # exactly one probe
    br.success()
    assert br.state == "closed"


def test_backoff_grows_with_jitter_and_obeys_retry_after() -> None:
    rng = random.Random(0)
    delays = [backoff_delay(a, 0.5, 20, None, rng) for a in range(8)]
    assert all(0 <= d <= min(20, 0.5 * 2**a) for a, d in enumerate(delays))
    assert backoff_delay(0, 0.5, 20, 7.0, rng) == 7.0
    assert backoff_delay(0, 0.5, 20, 999.0, rng) == 20  # capped


def test_strict_schema_shape() -> None:
    s = strict_json_schema(LLMAnswer)
    assert s["additionalProperties"] is False and set(s["required"]) == set(s["properties"])
    for d in s["$defs"].values():
        assert d["additionalProperties"] is False and set(d["required"]) == set(d["properties"])
    assert "minimum" not in str(s)


def test_factory_picks_heuristic_without_endpoint() -> None:
    assert create_analyst(Cfg()).name == "heuristic"
    assert create_analyst(Cfg(base_url="http://127.0.0.1:1/v1")).name == "llm"


@pytest.mark.parametrize("conf", [-0.1, 1.5])
def test_confidence_out_of_range_is_a_schema_violation(conf: float) -> None:
    from pydantic import ValidationError

    from sluice.models.analyst import RootCause

    with pytest.raises(ValidationError):
        RootCause(service="a", description="b", confidence=conf)
