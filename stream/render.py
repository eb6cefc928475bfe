"""Human-readable alerts for terminals (`scan`, `alerts --follow`)."""

from __future__ import annotations

from sluice.stream.records import Alert

__all__ = ["render_alert"]

_MARK = {"critical": "!!!", "high": "!! ", "warning": "!  ", "info": "   "}


def render_alert(a: Alert) -> str:
    r, p = a.report, a.provenance
    span = (
        f"{r.first_seen:%Y-%m-%d %H:%M:%S} .. {r.last_seen:%H:%M:%S}"
        if r.first_seen and r.last_seen
        else "?"
    )
    lines = [
        f"{_MARK[r.severity]} [{r.severity.upper()}] {r.title}",
        f"    {a.status} · fingerprint {a.fingerprint} rev {a.revision} · scope {r.scope} · {span}",
        f"    {r.summary}",
    ]
    for c in r.root_causes:
        lines.append(
            f"    probable root cause: {c.service} ({c.confidence:.0%}) — {c.description[:160]}"
        )
    if r.affected_services:
        lines.append(
            "    affected: " + ", ".join(f"{s.service} ({s.role})" for s in r.affected_services[:8])
        )
    if r.service_graph:
        lines.append(
            "    calls: " + ", ".join(f"{e.source} -> {e.target}" for e in r.service_graph[:8])
        )
    for rec in r.recommendations[:4]:
        lines.append(f"    do: {rec}")
    cost = f", ${p.cost_usd:.4f}" if p.cost_usd else ""
    lines.append(
        f"    analysis: {p.analysis}"
        + (f" ({p.llm_model}{cost})" if p.llm_model else "")
        + (f" — {p.error}" if p.error else "")
    )
    return "\n".join(lines)
