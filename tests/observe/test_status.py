"""The status page without a broker or a browser: the alert board, the service graph picture
(laid out in layers by networkx, well-formed, escaped), and the figures read from the metrics."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter

from sluice.models.analyst import EdgeLatency, GraphEdge, HeuristicAnalyst
from sluice.stream.analysis import AnalysisCounters
from sluice.stream.filtering.counters import StageCounters
from sluice.stream.observe.graph import ROLE_COLOUR, service_graph_svg
from sluice.stream.observe.metrics import PipelineMetrics
from sluice.stream.observe.status import AlertBoard, StatusPage
from sluice.stream.records import Acknowledgement, Alert
from tests.support.sinks import T0, alert, with_graph

SVG = "{http://www.w3.org/2000/svg}"


def _nodes(svg: str) -> dict[str, tuple[str, float, float]]:
    """service -> (fill, x, y) of each node box, parsed as XML (so also well-formed)."""
    root = ET.fromstring(svg)
    out = {}
    for g in root.iter(f"{SVG}g"):
        rect = g.find(f"{SVG}rect")
        assert rect is not None
        out[g.attrib["data-service"]] = (
            rect.attrib["fill"],
            float(rect.attrib["x"]),
            float(rect.attrib["y"]),
        )
    return out


def test_callers_sit_above_the_services_they_call_and_the_root_cause_is_red() -> None:
    a = with_graph(alert(1))  # frontend -> checkout <-> payment-service (a cycle)
    nodes = _nodes(service_graph_svg(a))
    assert set(nodes) == {"frontend", "checkout", "payment-service"}
    assert nodes["payment-service"][0] == ROLE_COLOUR["root_cause"]
    assert nodes["checkout"][0] == ROLE_COLOUR["impacted"]
    assert nodes["frontend"][2] < nodes["checkout"][2] == nodes["payment-service"][2]
    assert nodes["checkout"][1] != nodes["payment-service"][1]  # side by side, not stacked
    edges = ET.fromstring(service_graph_svg(a)).findall(f"{SVG}line")
    assert len(edges) == 3


def test_a_chain_is_drawn_in_one_column_of_rows() -> None:
    edges = [
        GraphEdge(source="web", target="api", evidence="T1"),
        GraphEdge(source="api", target="payment-service", evidence="T2"),
    ]
    a = alert(1)
    a = a.model_copy(update={"report": a.report.model_copy(update={"service_graph": edges})})
    nodes = _nodes(service_graph_svg(a))
    ys = sorted({y for _f, _x, y in nodes.values()})
    assert nodes["web"][2] < nodes["api"][2] < nodes["payment-service"][2]
    assert len(ys) == 3  # checkout, named but not on an edge, shares the top row
    boxes = sorted((x, y) for _f, x, y in nodes.values())
    assert len(set(boxes)) == len(boxes)  # no two boxes in one place


def test_log_text_in_the_graph_and_the_page_is_escaped() -> None:
    a = alert(1)
    evil = "<script>alert(1)</script>"
    edges = [GraphEdge(source=evil, target="payment-service", evidence='"><img src=x>')]
    report = a.report.model_copy(update={"title": evil, "summary": evil, "service_graph": edges})
    a = a.model_copy(update={"report": report})
    svg = service_graph_svg(a)
    assert "<script" not in svg and "<img" not in svg
    assert evil in _nodes(svg)  # the name survives, as text
    board = AlertBoard()
    board.add(a.to_bytes())
    page = StatusPage(_metrics(), board, "w1").render()
    assert "<script" not in page and "<img" not in page


def test_the_board_keeps_the_latest_revision_firing_first_and_is_bounded() -> None:
    board = AlertBoard(keep=3)
    for rev in (1, 3, 2):
        board.add(alert(rev).to_bytes())  # revision 2 arrives late: ignored
    (only,) = board.latest()
    assert only.revision == 3
    for i in range(5):
        report = alert(1).report.model_copy(update={"scope": f"scope-{i}"})
        other = Alert(**{**alert(1).model_dump(), "report": report, "fingerprint": f"fp{i}",
                         "generated_at": T0.replace(hour=9 + i)})  # fmt: skip
        board.add(other.to_bytes())
    latest = board.latest()
    assert [a.fingerprint for a in latest] == ["fp4", "fp3", "fp2"]  # the three most recent
    board.add(latest[0].model_copy(update={"status": "resolved", "revision": 9}).to_bytes())
    assert [a.fingerprint for a in board.latest()] == ["fp3", "fp2", "fp4"]  # firing first


def _metrics(stage: StageCounters | None = None) -> PipelineMetrics:
    return PipelineMetrics(stage or StageCounters(), AnalysisCounters(), HeuristicAnalyst())


def test_the_page_shows_throughput_forward_ratio_model_and_alerts() -> None:
    stage = StageCounters(consumed=1000, events=990, flagged=8, audited=2, model_version="m-7")
    analysis = AnalysisCounters(alerts=Counter({"high": 2}))
    metrics = PipelineMetrics(stage, analysis, HeuristicAnalyst())
    clock = [100.0]
    board = AlertBoard()
    acked = with_graph(alert(2)).model_copy(
        update={"acknowledged": Acknowledgement(by="ana", at=T0, note="failing over")}
    )
    board.add(acked.to_bytes())
    page = StatusPage(metrics, board, "worker-1", clock=lambda: clock[0])
    first = page.render()
    assert "measuring…" in first  # one sample: no rate yet
    stage.consumed += 6000
    clock[0] += 60
    html = page.render()
    assert ">100/s<" in html  # 6000 records in 60 s
    assert ">1.01%<" in html and "10 of 990 events" in html  # flagged + audited
    assert ">m-7<" in html and "recall not yet estimated" in html
    assert "payment-service refuses connections" in html and "acknowledged by ana" in html
    assert html.count("<svg") == 1 and 'data-service="payment-service"' in html
    assert ">2<" in html  # alert revisions published
    assert "No alerts yet." in StatusPage(metrics, AlertBoard(), "w").render()


def test_measured_latencies_label_the_arrows_and_slow_ones_are_red() -> None:
    a = with_graph(alert(1))
    measured = [
        EdgeLatency(
            source="checkout", target="payment-service", p95_ms=900, baseline_p95_ms=40, gaps=35
        ),
        EdgeLatency(source="frontend", target="checkout", p95_ms=12, baseline_p95_ms=10, gaps=80),
    ]
    a = a.model_copy(update={"report": a.report.model_copy(update={"latencies": measured})})
    root = ET.fromstring(service_graph_svg(a))
    labels = {t.text: t.attrib["class"] for t in root.iter(f"{SVG}text")
              if "latency" in t.attrib.get("class", "")}  # fmt: skip
    assert labels == {"900 ms": "latency slow", "12 ms": "latency"}
    titles = [t.text or "" for line in root.iter(f"{SVG}line") for t in line]
    assert any("p95 900 ms (usually 40 ms; 35 gaps)" in t for t in titles)
