"""An alert's service graph as SVG: services in layers (topological generations of the call
graph, strongly connected services condensed, by networkx), coloured by their role.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from sluice.stream.observe.render import is_slow, latency_text
from sluice.stream.records import Alert

if TYPE_CHECKING:
    pass

__all__ = ["ROLE_COLOUR", "service_graph_svg"]

_NODE_W, _NODE_H, _GAP_X, _GAP_Y, _PAD = 150, 34, 24, 56, 16


#: Node fills of the service graph by the service's role in the incident.
ROLE_COLOUR = {
    "root_cause": "#d62728",
    "impacted": "#ff9f1c",
    "symptom": "#f4d35e",
    "": "#c9d1d9",
}


def _layers(a: Alert) -> dict[str, int]:
    """Each service's layer: callers above the services they call, the topological generations
    of the call graph with each cycle condensed to one node (networkx does both)."""
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from(sorted(a.services() or {a.report.scope}))
    g.add_edges_from((e.source, e.target) for e in a.report.service_graph if e.source != e.target)
    dag = nx.condensation(g)
    layer: dict[str, int] = {}
    for depth, generation in enumerate(nx.topological_generations(dag)):
        for c in generation:
            for service in dag.nodes[c]["members"]:
                layer[service] = depth
    return layer


def _positions(layer: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Node centres in pixels: networkx's multipartite layout (one row per layer, each row
    centred, the same spacing in every row), scaled so that the widest row fits its boxes."""
    import networkx as nx

    g = nx.Graph()
    for service, depth in sorted(layer.items()):
        g.add_node(service, layer=depth)
    raw = {
        k: float(v[0])
        for k, v in nx.multipartite_layout(g, subset_key="layer", align="horizontal").items()
    }
    widest = max(list(layer.values()).count(d) for d in set(layer.values()))
    lo, span = min(raw.values()), (max(raw.values()) - min(raw.values())) or 1.0
    step = _NODE_W + _GAP_X
    return {
        service: (
            _PAD + _NODE_W / 2 + (x - lo) / span * (widest - 1) * step,
            _PAD + _NODE_H / 2 + layer[service] * (_NODE_H + _GAP_Y),
        )
        for service, x in raw.items()
    }


def service_graph_svg(a: Alert) -> str:
    """The alert's service graph as an SVG picture: an arrow from each caller to the service it
    calls; the root cause red, impacted services orange, symptoms yellow."""
    r = a.report
    roles = {s.service: s.role for s in r.affected_services}
    for c in r.root_causes:
        roles[c.service] = "root_cause"
    layer = _layers(a)
    pos = _positions(layer)
    width = int(max(x for x, _ in pos.values()) + _NODE_W / 2 + _PAD)
    height = int(max(y for _, y in pos.values()) + _NODE_H / 2 + _PAD)
    e = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="service graph of {e(r.title)}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#57606a"/></marker></defs>',
    ]
    latency = {(x.source, x.target): x for x in r.latencies}
    for edge in r.service_graph:
        if edge.source == edge.target or edge.source not in pos or edge.target not in pos:
            continue
        measured = latency.get((edge.source, edge.target))
        (x1, y1), (x2, y2) = pos[edge.source], pos[edge.target]
        if y1 == y2:  # the same row (a cycle): side to side, each direction on its own line
            side = 1 if x2 > x1 else -1
            x1, x2 = x1 + side * _NODE_W / 2, x2 - side * _NODE_W / 2
            y1 = y2 = y1 + side * 6
        else:  # callers sit in rows above the services they call
            y1, y2 = y1 + _NODE_H / 2, y2 - _NODE_H / 2
        said = f"{e(edge.source)} calls {e(edge.target)}: {e(edge.evidence[:200])}"
        if measured is not None:
            said += f"; {e(latency_text(measured))}"
        parts.append(
            f'<line class="edge" x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" '
            f'stroke="#57606a" stroke-width="1.5" marker-end="url(#arrow)"><title>'
            f"{said}</title></line>"
        )
        if measured is not None:  # the p95 gap at the middle of the arrow; red when slow
            slow = is_slow(measured)
            parts.append(
                f'<text class="latency{" slow" if slow else ""}" x="{(x1 + x2) / 2 + 4:.0f}" '
                f'y="{(y1 + y2) / 2:.0f}" font-size="10" font-family="sans-serif" '
                f'fill="{"#cf222e" if slow else "#57606a"}">{measured.p95_ms:.0f} ms</text>'
            )
    for service, (x, y) in sorted(pos.items()):
        role = roles.get(service, "")
        fill = ROLE_COLOUR.get(role, ROLE_COLOUR[""])
        text = "#ffffff" if role == "root_cause" else "#1f2328"
        label = service if len(service) <= 20 else service[:19] + "…"
        parts.append(
            f'<g class="node {e(role or "other")}" data-service="{e(service)}">'
            f'<rect x="{x - _NODE_W / 2:.0f}" y="{y - _NODE_H / 2:.0f}" width="{_NODE_W}" '
            f'height="{_NODE_H}" rx="6" fill="{fill}" stroke="#1f2328" stroke-width="0.5"/>'
            f'<text x="{x:.0f}" y="{y + 4:.0f}" text-anchor="middle" font-size="12" '
            f'font-family="sans-serif" fill="{text}">{e(label)}</text>'
            f"<title>{e(service)} {e(role.replace('_', ' '))}</title></g>"
        )
    parts.append("</svg>")
    return "".join(parts)
