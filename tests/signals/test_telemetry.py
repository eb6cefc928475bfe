"""Spans and metrics as evidence (`signals.spans`, `signals.telemetry`, `models.analyst._rank`):
the faults that log nothing, named from what the spans and metrics say, through the pipeline
(`scan_lines`: the filter stage's `screen_batch` and the analysis stage's state machine)."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import UTC, datetime

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.models.analyst import Bundle, HeuristicAnalyst, Signal, compress
from sluice.models.filter import KeywordFilter
from sluice.stream.analysis import AnalysisState, MemoryStore
from sluice.stream.analysis.state import load_scope
from sluice.stream.filtering.screen import screen_batch
from sluice.stream.records import Alert, SignalCounts
from sluice.stream.settings import PipelineSettings
from sluice.stream.signals.codec import dump_detector, load_detector
from sluice.stream.signals.detector import SignalDetector
from sluice.stream.signals.spans import TelemetryFolder
from sluice.stream.testing import scan_lines
from sluice.stream.testing.telemetry import Fault, telemetry_records

T0 = 1_700_000_000.0 - 1_700_000_000.0 % 60  # a minute's start
NORMAL_S = 15 * 60  # history before the fault
FAULT_S = 120.0


def _scan(records: list[bytes], cfg: PipelineSettings | None = None) -> list[Alert]:
    cfg = cfg or PipelineSettings.model_validate({"batch_size": 20})
    return scan_lines(records, cfg, source="otlp").alerts


def _firing(alerts: list[Alert], since: float) -> list[Alert]:
    """Alerts above info about events from `since` on, highest severity first."""
    rank = {"info": 0, "warning": 1, "high": 2, "critical": 3}
    out = [
        a
        for a in alerts
        if a.report.severity != "info"
        and a.report.last_seen is not None
        and a.report.last_seen.timestamp() >= since
    ]
    return sorted(out, key=lambda a: -rank[a.report.severity])


def _records(*faults: Fault, seconds: float = NORMAL_S + FAULT_S) -> list[bytes]:
    return [raw for _t, raw in telemetry_records(T0, seconds, faults)]


def test_a_delay_on_one_edge_names_the_callee_with_the_edges_figures() -> None:
    start = T0 + NORMAL_S
    alerts = _firing(_scan(_records(Fault("network_delay", "cart", start, start + FAULT_S))), start)
    assert alerts, "no alert for a 200 ms network delay into cart"
    top = alerts[0]
    assert top.report.root_causes[0].service == "cart"
    why = top.report.affected_services[0]
    assert why.service == "cart" and "frontend -> cart: time outside cart" in why.evidence
    # the figures: the usual ~1 ms outside cart against ~200 ms now
    assert " ms vs " in why.evidence and "usually (network" in why.evidence


def test_a_cpu_starved_service_without_errors_is_named() -> None:
    start = T0 + NORMAL_S
    alerts = _firing(_scan(_records(Fault("cpu", "currency", start, start + FAULT_S, 8.0))), start)
    assert alerts
    top = alerts[0]
    assert top.report.root_causes[0].service == "currency"
    evidence = top.report.affected_services[0].evidence
    assert "currency: self time" in evidence or "cpu.utilization" in evidence
    assert not any("ERROR" in t for t in top.evidence.values())  # nothing logged an error


def _caller_errors(start: float) -> list[bytes]:
    """frontend logs timeouts calling cart while cart is slow to reach: the symptom upstream."""
    return [
        orjson.dumps(
            {
                "ts": datetime.fromtimestamp(start + i, UTC).isoformat(),
                "service": "frontend",
                "level": "ERROR",
                "message": f"request {i} failed: timeout calling cart after 150 ms",
            }
        )
        for i in range(0, int(FAULT_S), 2)
    ]


def _merged(spans: list[tuple[float, bytes]], logs: list[bytes], start: float) -> list[bytes]:
    timed = spans + [(start + 2 * i + 0.5, raw) for i, raw in enumerate(logs)]
    return [raw for _t, raw in sorted(timed, key=lambda x: x[0])]


def test_a_caller_that_only_logs_errors_because_its_callee_is_slow_is_not_the_root_cause() -> None:
    start = T0 + NORMAL_S
    fault = Fault("network_delay", "cart", start, start + FAULT_S)
    spans = telemetry_records(T0, NORMAL_S + FAULT_S, [fault])
    logs = _caller_errors(start)
    with_spans = _firing(_scan(_merged(spans, logs, start)), start)
    assert with_spans and with_spans[0].report.root_causes[0].service == "cart"
    assert "frontend" in {a.service for a in with_spans[0].report.affected_services}
    # the logs alone blame the caller: what the spans change
    logs_only = _firing(_scan(logs), start)
    assert logs_only and logs_only[0].report.root_causes[0].service == "frontend"


def test_a_fault_free_stretch_raises_nothing_above_warning() -> None:
    alerts = _scan(_records())
    assert not [a for a in alerts if a.report.severity in ("high", "critical")]


def test_signals_name_their_figures_in_the_prompt_inside_the_fence() -> None:
    sig = Signal(
        "edge_latency",
        "cart",
        "frontend -> cart: time outside cart 201.0 ms vs 1.0 ms usually",
        0.9,
        caller="frontend",
    )
    digest = compress(Bundle("s", [], signals=[sig]), 2000)
    body = digest.prompt.split(f"<{digest.fence}>")[1]
    assert "edge_latency: frontend -> cart: time outside cart 201.0 ms" in body


def _span(
    sid: str, parent: str | None, service: str, start: float, dur: float
) -> dict[str, object]:
    out: dict[str, object] = {
        "span_id": sid,
        "service": service,
        "start": start,
        "duration_s": dur,
        "operation": "op",
    }
    if parent:
        out["parent_span_id"] = parent
    return out


def test_self_time_and_time_outside_the_callee_children_first_or_last() -> None:
    """A client span of 30 ms in `a` whose child, `b`'s server span, took 10 ms: 20 ms outside
    `b`; `a`'s server span of 50 ms holding that call has 20 ms of its own. Whichever order the
    spans come in, across batches too, the call is counted once."""
    b = _span("3", "2", "b", T0 + 0.01, 0.010)
    client = _span("2", "1", "a", T0, 0.030)
    root = _span("1", None, "a", T0, 0.050)
    for order in ([b, client, root], [root, client, b]):
        folder = TelemetryFolder(10.0)
        rows = [folder.fold([s])[0] for s in order]
        recs = [r["default"] for r in rows if r]
        calls = [(rec.names[x[1]], rec.names[x[2]], x) for rec in recs for x in rec.calls]
        assert [(a, c) for a, c, _ in calls] == [("a", "b")]
        (_a, _b, row) = calls[0]
        if order[0] is b:  # children first: the time outside b is known
            assert row[5] == 1 and math.isclose(math.exp(row[6]), 20_000, rel_tol=1e-3)
            selves = {rec.names[x[1]]: math.exp(x[3] / x[2]) for rec in recs for x in rec.spans}
            assert math.isclose(selves["a"], math.sqrt(20_000 * 20_000), rel_tol=1e-3)


def test_the_folder_is_bounded() -> None:
    folder = TelemetryFolder(10.0, max_pending=1000)
    for i in range(20):
        folder.fold([_span(f"{i}-{j}", f"p{i}-{j}", "a", T0, 0.001) for j in range(500)])
    assert len(folder._kids) + len(folder._old_kids) <= 1000


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.sampled_from(["a", "b", "c"]), st.floats(1e-5, 2.0)),
        min_size=1,
        max_size=60,
    )
)
def test_detector_state_with_spans_round_trips(rows: list[tuple[int, str, float]]) -> None:
    d = SignalDetector()
    for n, svc, dur in rows:
        rec = SignalCounts(
            scope="s",
            bucket_s=10.0,
            names=[svc, "z"],
            spans=[(n, 0, 3, 3 * math.log(dur * 1e6), 0)],
            calls=[(n, 1, 0, 3, 3 * math.log(dur * 1e6 + 5), 3, 3 * math.log(5.0), 1)],
            metric_names=["cpu"],
            metrics=[(n, 0, 0, 1, dur)],
        )
        d.add_counts(rec)
    back = load_detector(dump_detector(d))
    assert dump_detector(back) == dump_detector(d)
    assert back.signals(0, 310, lines=False) == d.signals(0, 310, lines=False)


def test_a_state_without_spans_loads_with_empty_span_baselines() -> None:
    old = SignalDetector()
    raw = dump_detector(old)
    assert b"telemetry" not in raw  # what a release before spans wrote, and reads
    back = load_detector(raw)
    assert back.telemetry.selves == {}


def test_an_alert_raised_by_spans_alone_is_an_incident_with_a_title_that_says_so() -> None:
    sig = Signal("self_time", "currency", "currency: self time 9.0 ms vs 1.0 ms usually", 0.9)
    bundle = Bundle("s", [], signals=[sig], line_signals=False)
    report = HeuristicAnalyst().from_digest(bundle, compress(bundle, 2000), "heuristic").report
    assert report.is_incident and report.severity == "high"
    assert report.root_causes[0].service == "currency"
    assert "currency got slow in its own work" in report.title


def test_exemplars_are_counted_and_never_become_feedback() -> None:
    start = T0 + NORMAL_S
    got = scan_lines(
        _records(Fault("network_delay", "cart", start, start + FAULT_S)),
        PipelineSettings.model_validate({"batch_size": 20}),
        source="otlp",
    )
    forwarded = [why for _src, why in got.forwarded]
    assert got.counters.exemplars == forwarded.count("exemplar") > 0
    assert not [f for f in got.feedback if f.text.startswith("slow call")]
    assert all(o.flagged_positive + o.flagged_negative == 0 for o in got.outcomes)


def test_hostile_names_keep_a_counts_record_bounded() -> None:
    """10,000 spans each naming another 100-character service, children of 10,000 parents in
    yet others: the record keeps 2,000 rows of each kind, says how many it left out, and stays
    far below Kafka's record limit."""
    folder = TelemetryFolder(10.0)
    kids = [_span(f"c{i}", f"p{i}", f"{i:0100d}", T0, 0.001) for i in range(10_000)]
    parents = [_span(f"p{i}", None, f"p{i:099d}", T0, 0.002) for i in range(10_000)]
    rows, _ex = folder.fold([*kids, *parents])
    rec = rows["default"]
    assert len(rec.spans) == len(rec.calls) == 2000
    assert folder.dropped == (20_000 - 2000) + (10_000 - 2000)  # self-time rows, call rows
    assert len(rec.to_bytes()) < 900_000


_LANDED_READS = """
import sys
from sluice.stream.analysis.state import load_scope
from sluice.stream.records import SignalCounts, SuspectBatch, parse_suspects_record
from sluice.stream.signals.codec import load_detector

batch, counts, state, detector = sys.stdin.buffer.read().split(b"\\n")
b = parse_suspects_record(batch)
assert isinstance(b, SuspectBatch), b
assert isinstance(parse_suspects_record(counts), SignalCounts)
load_detector(detector)
print(len(b.suspects), len(load_scope("scope/default", state).pending))
"""


def test_the_release_before_reads_what_spans_make(landed_release: str) -> None:
    """Rolling upgrades: the landed release reads this one's exemplar suspects (`exemplar`, an
    optional field it drops), counts with span rows (fields it drops), a scope state whose
    windows hold spans' signals (`telemetry`, a field of their own, not new kinds in `signals`)
    and the detector state with its `telemetry` key."""
    start = T0 + NORMAL_S
    cfg = PipelineSettings.model_validate({"batch_size": 20})
    records = _records(Fault("network_delay", "cart", start, start + FAULT_S))
    store, folder = MemoryStore(), TelemetryFolder(10.0)
    state = AnalysisState(cfg, store, lambda: 0.0)
    exemplars: list[bytes] = []
    counts: list[bytes] = []
    for i in range(0, len(records), 20):
        out = screen_batch(records[i : i + 20], [None] * 20, lambda j: ("otlp", 0, j),
                           KeywordFilter(), cfg, telemetry=folder)  # fmt: skip
        for _scope, raw in out.counts:
            counts.append(raw)
            state.apply(0, None, raw)
        for messages in out.messages.values():
            for raw in messages:
                exemplars.append(raw)
                state.apply(0, None, raw)
    state.close_all("default")
    raw_state, detector = store.get("scope/default"), store.get("signals/default")
    assert exemplars and counts and raw_state and detector and b'"telemetry"' in detector
    pending = load_scope("scope/default", raw_state).pending
    assert any(p.telemetry for p in pending) and all(p.signals is None for p in pending)
    assert b'"exemplar":"call"' in b"".join(exemplars) or b'"exemplar":"self"' in b"".join(
        exemplars
    )
    # what the landed release still needs; a sabotage check that the test can fail: with the
    # exemplar as a value of `reason` (as this change first wrote it) the landed release refuses it
    bad = exemplars[-1].replace(b'"reason":"model"', b'"reason":"exemplar"')
    refused = subprocess.run(
        [sys.executable, "-c", _LANDED_READS],
        input=b"\n".join([bad, counts[-1], raw_state, detector]),
        env={"PYTHONPATH": landed_release},
        capture_output=True,
        timeout=60,
    )
    assert refused.returncode != 0 and b"reason" in refused.stderr
    run = subprocess.run(
        [sys.executable, "-c", _LANDED_READS],
        input=b"\n".join([exemplars[-1], counts[-1], raw_state, detector]),
        env={"PYTHONPATH": landed_release},
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    n, windows = map(int, run.stdout.split())
    assert n >= 1 and windows == len(pending)
