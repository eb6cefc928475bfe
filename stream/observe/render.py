"""Alerts for people: the rich terminal view of `sluice alerts` and `sluice scan` (severity
colours, status, the service graph as a tree from the root cause, evidence, recommendations,
tokens and cost). Rich drops the colours itself when the output is not a terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.models.analyst import EdgeLatency
from sluice.stream.records import Alert

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.tree import Tree

__all__ = [
    "SEVERITY_STYLE",
    "alert_view",
    "distinct_cuts",
    "is_slow",
    "latency_text",
    "service_tree",
]

#: Rich styles per severity (and for a resolved alert, whatever its severity).
SEVERITY_STYLE = {
    "critical": "bold white on red",
    "high": "bold red",
    "warning": "bold yellow",
    "info": "cyan",
    "resolved": "bold green",
}
_BORDER = {"critical": "red", "high": "red", "warning": "yellow", "info": "cyan",
           "resolved": "green"}  # fmt: skip


def latency_text(x: EdgeLatency) -> str:
    """One measured edge for people: "p95 240 ms (usually 40 ms; 35 gaps)"."""
    usual = f"usually {x.baseline_p95_ms:.0f} ms; " if x.baseline_p95_ms is not None else ""
    return f"p95 {x.p95_ms:.0f} ms ({usual}{x.gaps} gaps)"


def is_slow(x: EdgeLatency) -> bool:
    """Far above its usual p95: three times and 30 ms more (the signals' default thresholds)."""
    usual = x.baseline_p95_ms
    return usual is not None and x.p95_ms >= 3 * usual and x.p95_ms - usual >= 30


def service_tree(a: Alert) -> Tree:
    """The service graph from the root cause outwards: under each service, the services that
    call it (who feels its failure). Affected services the graph does not reach hang under the
    root as "also affected"; a cycle is shown once."""
    from rich.text import Text
    from rich.tree import Tree

    r = a.report
    roles = {s.service: s.role for s in r.affected_services}
    roots = [c.service for c in r.root_causes] or [
        s.service for s in r.affected_services if s.role == "root_cause"
    ]
    root = roots[0] if roots else r.scope
    callers: dict[str, list[str]] = {}
    for e in r.service_graph:
        callers.setdefault(e.target, []).append(e.source)
    latency = {(x.source, x.target): x for x in r.latencies}
    style = {"root_cause": "bold red", "impacted": "yellow", "symptom": "dim"}

    def label(service: str) -> Text:
        role = roles.get(service, "root_cause" if service == root else "")
        text = Text(service, style.get(role, ""))
        if role:
            text.append(" " + role.replace("_", " "), "dim")
        return text

    tree = Tree(label(root), guide_style="dim")
    seen = {root}
    frontier = [(root, tree)]
    while frontier:
        service, node = frontier.pop(0)
        for caller in sorted(set(callers.get(service, []))):
            if caller in seen:
                continue
            seen.add(caller)
            text = label(caller)
            measured = latency.get((caller, service))
            if measured is not None:  # how long its calls into `service` took
                text.append(f"  {latency_text(measured)}", "red" if is_slow(measured) else "dim")
            frontier.append((caller, node.add(text)))
    rest = [s.service for s in r.affected_services if s.service not in seen]
    if rest:
        also = tree.add(Text("also affected", "dim"))
        for s in rest:
            also.add(label(s))
    return tree


#: Templates shown in a panel at most: anomalous ones, then context; the rest are counted.
MAX_EVIDENCE, MAX_CONTEXT, _CUT = 10, 3, 120


def distinct_cuts(texts: list[str], width: int = _CUT) -> list[str]:
    """Each text cut to `width` characters, longer where that would show two the same: a cut
    reaches 40 characters past where the texts that would look alike differ."""
    cuts = [t[:width] for t in texts]
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(cuts):
        groups.setdefault(c, []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        alike = [texts[i] for i in members]
        common = next(
            (k for k, chars in enumerate(zip(*alike, strict=False)) if len(set(chars)) > 1),
            min(map(len, alike)),
        )
        for i in members:
            cuts[i] = texts[i][: max(width, common + 40)]
    return [c + ("…" if len(c) < len(t) else "") for c, t in zip(cuts, texts, strict=True)]


def _templates(a: Alert) -> list[RenderableType]:
    """The evidence table (templates the analysis judged anomalous), the context after it (the
    other templates of the window, dimmed), and how many of each were left out."""
    from rich.table import Table
    from rich.text import Text

    ids = list(a.evidence)
    anomalous = set(ids if a.anomalous is None else a.anomalous)
    shown = [t for t in ids if t in anomalous][:MAX_EVIDENCE]
    context = [t for t in ids if t not in anomalous][:MAX_CONTEXT]
    cut = dict(zip(shown + context, distinct_cuts([a.evidence[t] for t in shown + context]),
                   strict=True))  # fmt: skip
    table = Table(box=None, show_header=True, header_style="dim", pad_edge=False)
    table.add_column("evidence", style="cyan", no_wrap=True)
    table.add_column("template")
    for tid in shown:
        table.add_row(tid, Text(cut[tid]))  # a template is text, never rich markup
    parts: list[RenderableType] = [table] if shown else []
    if (more := len(anomalous & set(ids)) - len(shown)) > 0:
        parts.append(Text(f"… and {more} more anomalous templates (--json lists all)", "dim"))
    if context:
        ctx = Table(box=None, show_header=True, header_style="dim", pad_edge=False)
        ctx.add_column("context", style="dim", no_wrap=True)
        ctx.add_column("template", style="dim")
        for tid in context:
            ctx.add_row(tid, Text(cut[tid]))
        parts.append(ctx)
    if (more := len(ids) - len(anomalous & set(ids)) - len(context)) > 0:
        parts.append(Text(f"… and {more} more templates of context", "dim"))
    return parts


def alert_view(a: Alert) -> RenderableType:
    """One alert as a rich panel: header, summary, graph tree, evidence, what to do, cost."""
    from rich.console import Group
    from rich.markup import escape
    from rich.panel import Panel
    from rich.text import Text

    r, p = a.report, a.provenance
    resolved = a.status == "resolved"
    style = SEVERITY_STYLE["resolved" if resolved else r.severity]
    head = Text.assemble(
        (f" {'RESOLVED' if resolved else r.severity.upper()} ", style),
        " ",
        (r.title, "bold"),
    )
    span = (
        f"{r.first_seen:%Y-%m-%d %H:%M:%S} .. {r.last_seen:%H:%M:%S}"
        if r.first_seen and r.last_seen
        else "time unknown"
    )
    status: str = a.status
    if not resolved and not r.is_incident:  # a warning: worth a look, not (yet) an incident
        status += f" ({r.severity}, not an incident)"
    meta = Text(f"{status} · rev {a.revision} · scope {r.scope} · {span} · {a.fingerprint}", "dim")
    parts: list[RenderableType] = [head, meta]
    if a.acknowledged and not resolved:
        note = f": {a.acknowledged.note}" if a.acknowledged.note else ""
        parts.append(Text(f"acknowledged by {a.acknowledged.by}{note}", "bold cyan"))
    if a.silenced_until and not resolved:
        parts.append(Text(f"silenced until {a.silenced_until:%Y-%m-%d %H:%M} UTC", "dim italic"))
    parts.append(Text(r.summary))
    for c in r.root_causes[:3]:
        parts.append(
            Text.from_markup(
                f"[bold]root cause[/] {escape(c.service)} ({c.confidence:.0%}): "
                f"{escape(c.description[:200])}"
            )
        )
    parts.append(service_tree(a))
    if a.evidence:
        parts += _templates(a)
    for rec in r.recommendations[:4]:
        parts.append(Text.from_markup(f"[green]→[/] {escape(rec)}"))
    tokens = f"{p.prompt_tokens}+{p.completion_tokens} tokens" if p.prompt_tokens else ""
    cost = f"${p.cost_usd:.4f}" if p.cost_usd else ""
    model = p.llm_model or ""
    footer = " · ".join(x for x in (f"analysis {p.analysis}", model, tokens, cost) if x)
    if p.error:
        footer += f" · {p.error}"
    parts.append(Text(footer, "dim"))
    return Panel(Group(*parts), border_style=_BORDER["resolved" if resolved else r.severity])
