"""The terminal view of an alert: severity, status, the service graph as a tree from the root
cause (callers under the service they call), evidence, recommendations, tokens and cost."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from rich.console import Console

from sluice.models.analyst import EdgeLatency
from sluice.stream.cli.main import cli
from sluice.stream.observe.render import alert_view, distinct_cuts, is_slow, service_tree
from sluice.stream.records import Alert
from tests.support.sinks import alert, with_graph


def _text(renderable: object, width: int = 100) -> str:
    console = Console(record=True, width=width, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_the_tree_starts_at_the_root_cause_and_nests_the_callers() -> None:
    lines = _text(service_tree(with_graph(alert()))).splitlines()
    assert lines[0] == "payment-service root cause"
    assert lines[1].endswith("checkout impacted")
    assert lines[2].endswith("frontend") and lines[2].index("frontend") > lines[1].index("check")
    assert len(lines) == 3  # the cycle back to payment-service is shown once


def test_services_the_graph_does_not_reach_are_also_affected() -> None:
    text = _text(service_tree(alert()))  # no edges at all
    assert text.splitlines()[0] == "payment-service root cause"
    assert "also affected" in text and "checkout impacted" in text


def test_the_view_shows_severity_status_evidence_what_to_do_and_cost() -> None:
    text = _text(alert_view(with_graph(alert(1))))
    assert " HIGH  payment-service refuses connections" in text
    assert "firing · rev 1 · scope shop" in text
    assert "root cause payment-service (80%): refused" in text
    assert "T1" in text and "connection refused" in text
    assert "→ restart payment-service" in text
    assert "analysis llm · gpt-4o-mini · 1200+300 tokens · $0.0009" in text
    resolved = _text(alert_view(alert(2, "resolved")))
    assert " RESOLVED  payment-service refuses connections" in resolved


def test_the_view_says_who_acknowledged_and_until_when_it_is_silenced() -> None:
    from datetime import datetime

    from sluice.stream.records import Acknowledgement

    at = datetime.fromisoformat("2024-06-01T09:00:00+00:00")
    marked = alert(3).model_copy(
        update={
            "acknowledged": Acknowledgement(by="ana", at=at, note="failing over"),
            "silenced_until": at.replace(hour=11),
        }
    )
    text = _text(alert_view(marked))
    assert "acknowledged by ana: failing over" in text
    assert "silenced until 2024-06-01 11:00 UTC" in text
    assert "acknowledged" not in _text(alert_view(alert(3)))


def test_log_text_is_shown_as_text_not_markup() -> None:
    a = alert()
    evil = a.report.model_copy(update={"summary": "[bold red]not markup[/] [/]"})
    text = _text(alert_view(a.model_copy(update={"report": evil})))
    assert "[bold red]not markup[/] [/]" in text


def test_scan_saves_the_terminal_view_as_svg_without_web_fonts(tmp_path: Path) -> None:
    out = tmp_path / "view.svg"
    result = CliRunner().invoke(cli, ["scan", "--demo", "--no-metrics", "--svg", str(out)])
    assert result.exit_code == 0, result.output
    svg = out.read_text()
    assert svg.startswith("<svg") and "ts-contacts-service" in svg
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "").replace(
        "https://www.textualize.io", ""
    )  # no web font: nothing is fetched when the picture is viewed


def test_measured_latencies_sit_on_the_graph_edges() -> None:
    a = with_graph(alert())
    measured = [
        EdgeLatency(
            source="checkout", target="payment-service", p95_ms=900, baseline_p95_ms=40, gaps=35
        ),
        EdgeLatency(source="frontend", target="checkout", p95_ms=12, baseline_p95_ms=10, gaps=80),
    ]
    a = a.model_copy(update={"report": a.report.model_copy(update={"latencies": measured})})
    lines = _text(service_tree(a), width=120).splitlines()
    assert "checkout impacted  p95 900 ms (usually 40 ms; 35 gaps)" in lines[1]
    assert "frontend  p95 12 ms (usually 10 ms; 80 gaps)" in lines[2]
    assert is_slow(measured[0]) and not is_slow(measured[1])
    assert Alert.model_validate_json(a.model_dump_json()) == a  # on the alerts topic as well


def test_every_anomalous_template_is_shown_or_counted_and_context_kept_apart() -> None:
    evidence = {f"T{i}": f"error template number {i} [dispatcherServlet] x" for i in range(1, 15)}
    evidence |= {f"T{i}": f"info context line {i}" for i in range(15, 20)}
    anomalous = [f"T{i}" for i in range(1, 15)]
    a = alert().model_copy(update={"evidence": evidence, "anomalous": anomalous})
    text = _text(alert_view(a), width=140)
    shown = [f"T{i}" for i in range(1, 15) if f"error template number {i} " in text]
    assert len(shown) == 10 and "… and 4 more anomalous templates" in text
    assert "[dispatcherServlet]" in text  # text, not rich markup
    ctx = text.index("context")
    assert ctx > text.index("T10 ") and "info context line 15" in text[ctx:]
    assert "… and 2 more templates of context" in text
    # a release before the field: every template is evidence
    assert "context" not in _text(alert_view(a.model_copy(update={"anomalous": None})), 140)


def test_two_templates_are_never_cut_to_the_same_text() -> None:
    head = "error servlet.service() for servlet [dispatcherservlet] threw exception " * 3
    texts = [head + "no instances for ts-food-service", head + "no instances for ts-seat-service"]
    cuts = distinct_cuts(texts)
    assert cuts[0] != cuts[1] and "ts-food" in cuts[0] and "ts-seat" in cuts[1]
    assert distinct_cuts(["short", "x" * 200]) == ["short", "x" * 120 + "…"]


def test_a_warning_that_is_not_an_incident_says_so() -> None:
    a = alert(severity="warning")
    warn = a.model_copy(update={"report": a.report.model_copy(update={"is_incident": False})})
    assert "firing (warning, not an incident)" in _text(alert_view(warn))
