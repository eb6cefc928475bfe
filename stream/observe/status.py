"""The status page a worker serves at `/status` on its web port: how the pipeline is doing
(throughput, forward ratio, model version and recall estimate, LLM calls and spend) and the
latest alerts, each with its service graph drawn as SVG.

The figures are read from the worker's Prometheus registry (one source for `/metrics` and this
page); the alerts from the tail of the `alerts` topic, so every worker shows every alert, not
only those of its own partitions. Log text reaches the page only escaped, and the page runs no
script (its Content-Security-Policy says so), so an alert's text cannot act in a browser.
"""

from __future__ import annotations

import html
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sluice.stream.records import Alert, read_record

if TYPE_CHECKING:
    from sluice.stream.observe.metrics import PipelineMetrics

from sluice.stream.observe.graph import service_graph_svg

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "STATUS_PATH",
    "AlertBoard",
    "Figures",
    "StatusPage",
]

STATUS_PATH = "/status"  # Faust's own index is at `/`
#: No scripts, no outside requests: styles and pictures are inline.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_SEVERITY_COLOUR = {"critical": "#b00020", "high": "#cf222e", "warning": "#e0a100",
                    "info": "#1f77b4", "resolved": "#2ca02c"}  # fmt: skip


class AlertBoard:
    """The latest revision of the most recent alerts, by fingerprint (bounded)."""

    def __init__(self, keep: int = 20) -> None:
        self._keep = keep
        self._latest: dict[str, Alert] = {}

    def add(self, raw: bytes) -> None:
        a = read_record(Alert, raw)
        seen = self._latest.get(a.fingerprint)
        if seen is not None and seen.revision > a.revision:
            return  # an older revision, from another partition's replay
        self._latest[a.fingerprint] = a
        if len(self._latest) > self._keep:
            oldest = min(self._latest.values(), key=lambda x: x.generated_at)
            del self._latest[oldest.fingerprint]

    def latest(self) -> list[Alert]:
        """Firing alerts first, then the most recent first."""
        return sorted(
            self._latest.values(),
            key=lambda a: (a.status != "firing", -a.generated_at.timestamp()),
        )


# -- the service graph --------------------------------------------------------------------------


# -- the page -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What the page shows of the metrics."""

    events_per_s: float | None  # over the last minute; None until two samples exist
    consumed: int
    events: int
    forwarded: int  # flagged + audit samples
    model_version: str
    recall: tuple[float, float, float] | None  # estimate, low, high for the model in use
    llm_calls: int
    llm_tokens: int
    llm_cost_usd: float
    alerts_published: int
    open_windows: int

    @property
    def forward_ratio(self) -> float | None:
        return self.forwarded / self.events if self.events else None


def _samples(metrics: PipelineMetrics) -> Iterator[tuple[str, dict[str, str], float]]:
    for fam in metrics.registry.collect():
        for s in fam.samples:
            yield s.name, s.labels, float(s.value)


class StatusPage:
    """Renders the page from the metrics and the alert board; `sample()` (a timer) feeds the
    throughput over the last minute."""

    def __init__(
        self,
        metrics: PipelineMetrics,
        board: AlertBoard,
        worker: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._board = board
        self._worker = worker
        self._clock = clock
        # The counters start at zero with the process: the first minute's rate counts from here.
        self._consumed: deque[tuple[float, int]] = deque([(clock(), 0)], maxlen=64)

    def figures(self) -> Figures:
        samples = list(_samples(self._metrics))  # one collection of the registry per page
        total: dict[str, float] = {}
        version = ""
        for name, labels, value in samples:
            total[name] = total.get(name, 0.0) + value
            if name == "sluice_filter_model_info":
                version = labels.get("version", "")
        recall_parts = {
            name.removeprefix("sluice_filter_recall_"): value
            for name, labels, value in samples
            if name.startswith("sluice_filter_recall_") and labels.get("version") == version
        }

        def n(name: str) -> int:
            return int(total.get(name, 0))

        recall = (
            (recall_parts["estimate"], recall_parts["low"], recall_parts["high"])
            if {"estimate", "low", "high"} <= recall_parts.keys()
            else None
        )
        return Figures(
            events_per_s=self._rate(n("sluice_events_consumed_total")),
            consumed=n("sluice_events_consumed_total"),
            events=n("sluice_events_parsed_total"),
            forwarded=n("sluice_events_flagged_total") + n("sluice_events_audit_sampled_total"),
            model_version=version,
            recall=recall,
            llm_calls=n("sluice_llm_calls_total"),
            llm_tokens=n("sluice_llm_prompt_tokens_total")
            + n("sluice_llm_completion_tokens_total"),
            llm_cost_usd=total.get("sluice_llm_cost_dollars_total", 0.0),
            alerts_published=n("sluice_alerts_published_total"),
            open_windows=n("sluice_analysis_windows_open"),
        )

    def sample(self) -> None:
        self.figures()  # records the consumed count at this time

    def _rate(self, consumed: int) -> float | None:
        now = self._clock()
        self._consumed.append((now, consumed))
        while len(self._consumed) > 2 and now - self._consumed[1][0] >= 60:
            self._consumed.popleft()  # keep one sample a minute or more old
        t0, c0 = self._consumed[0]
        return (consumed - c0) / (now - t0) if now - t0 >= 1 else None

    def render(self) -> str:
        f = self.figures()
        alerts = self._board.latest()
        return _PAGE.format(
            worker=html.escape(self._worker),
            now=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            tiles="".join(_tiles(f)),
            count=len(alerts),
            alerts="".join(_alert_card(a) for a in alerts) or _NO_ALERTS,
        )


def _tiles(f: Figures) -> Iterator[str]:
    rate = f"{f.events_per_s:,.0f}/s" if f.events_per_s is not None else "measuring…"
    ratio = f"{f.forward_ratio:.2%}" if f.forward_ratio is not None else "n/a"
    recall = (
        f"{f.recall[0]:.1%} <small>({f.recall[1]:.0%} to {f.recall[2]:.0%})</small>"
        if f.recall
        else "not yet estimated"
    )
    for tid, label, value, note in (
        ("throughput", "throughput", rate, f"last minute; {f.consumed:,} records read"),
        ("forward", "forwarded to analysis", ratio, f"{f.forwarded:,} of {f.events:,} events"),
        ("model", "filter model", html.escape(f.model_version or "n/a"), f"recall {recall}"),
        ("llm", "LLM calls", f"{f.llm_calls:,}", f"{f.llm_tokens:,} tokens"),
        ("spend", "LLM spend", f"${f.llm_cost_usd:,.4f}", "at the configured prices"),
        ("alerts", "alert revisions", f"{f.alerts_published:,}",
         f"{f.open_windows:,} windows open"),
    ):  # fmt: skip
        yield (
            f'<div class="tile" id="{tid}"><div class="label">{label}</div>'
            f'<div class="value">{value}</div><div class="note">{note}</div></div>'
        )


def _alert_card(a: Alert) -> str:
    r, e = a.report, html.escape
    state = "resolved" if a.status == "resolved" else r.severity
    marks = []
    if a.acknowledged and a.status == "firing":
        note = f": {a.acknowledged.note}" if a.acknowledged.note else ""
        marks.append(f'<span class="mark">acknowledged by {e(a.acknowledged.by)}{e(note)}</span>')
    if a.silenced_until and a.status == "firing":
        marks.append(f'<span class="mark">silenced until {a.silenced_until:%H:%M} UTC</span>')
    causes = "".join(
        f"<li><b>{e(c.service)}</b> ({c.confidence:.0%}): {e(c.description[:300])}</li>"
        for c in r.root_causes[:3]
    )
    todo = "".join(f"<li>{e(x[:300])}</li>" for x in r.recommendations[:4])
    p = a.provenance
    cost = f" · {p.prompt_tokens + p.completion_tokens:,} tokens · ${p.cost_usd:.4f}" \
        if p.prompt_tokens else ""  # fmt: skip
    return (
        f'<article class="alert {state}" data-fingerprint="{e(a.fingerprint)}">'
        f'<header><span class="badge" style="background:{_SEVERITY_COLOUR[state]}">'
        f"{e(state.upper())}</span> <h2>{e(r.title)}</h2></header>"
        f'<div class="meta">{e(a.status)} · revision {a.revision} · scope {e(r.scope)} · '
        f"{a.generated_at:%Y-%m-%d %H:%M:%S} UTC · <code>{e(a.fingerprint)}</code>"
        f"{' · ' + ' '.join(marks) if marks else ''}</div>"
        f'<div class="body"><div class="text"><p>{e(r.summary[:1000])}</p>'
        f"{'<h3>probable root cause</h3><ul>' + causes + '</ul>' if causes else ''}"
        f"{'<h3>what to do</h3><ul>' + todo + '</ul>' if todo else ''}"
        f'<div class="meta">analysis {e(p.analysis)}{e(cost)}</div></div>'
        f'<figure>{service_graph_svg(a)}<figcaption><span class="key root_cause"></span>root '
        f'cause <span class="key impacted"></span>impacted <span class="key symptom"></span>'
        f"symptom; arrows: caller → called</figcaption></figure></div></article>"
    )


_NO_ALERTS = '<p class="none">No alerts yet.</p>'

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="10">
<title>Sluice status</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; background: #f6f8fa; color: #1f2328; }}
header.top {{ background: #24292f; color: #fff; padding: 12px 24px; display: flex;
  justify-content: space-between; align-items: baseline; }}
header.top h1 {{ font-size: 20px; margin: 0; }}
main {{ padding: 16px 24px; }}
.tiles {{ display: grid; grid-template-columns: repeat(6, 1fr); gap: 12px; }}
.tile {{ background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 12px; }}
.tile .label {{ font-size: 12px; color: #57606a; text-transform: uppercase; }}
.tile .value {{ font-size: 24px; font-weight: 600; margin: 4px 0; }}
.tile .note {{ font-size: 12px; color: #57606a; }}
article.alert {{ background: #fff; border: 1px solid #d0d7de; border-left: 6px solid #d0d7de;
  border-radius: 8px; margin: 14px 0; padding: 12px 16px; }}
article.critical, article.high {{ border-left-color: #cf222e; }}
article.warning {{ border-left-color: #e0a100; }}
article.resolved {{ border-left-color: #2ca02c; opacity: 0.85; }}
article header h2 {{ display: inline; font-size: 17px; }}
.badge {{ color: #fff; font-size: 12px; font-weight: 700; padding: 2px 8px; border-radius: 4px; }}
.meta {{ font-size: 12px; color: #57606a; margin: 4px 0; }}
.mark {{ background: #ddf4ff; color: #0969da; padding: 1px 6px; border-radius: 4px; }}
.body {{ display: flex; gap: 20px; align-items: flex-start; }}
.body .text {{ flex: 1; min-width: 320px; }}
h3 {{ font-size: 13px; margin: 8px 0 2px; }}
ul {{ margin: 2px 0; padding-left: 20px; font-size: 14px; }}
figure {{ margin: 0; }}
figcaption {{ font-size: 11px; color: #57606a; }}
.key {{ display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 8px; }}
.key.root_cause {{ background: #d62728; }} .key.impacted {{ background: #ff9f1c; }}
.key.symptom {{ background: #f4d35e; }}
.none {{ color: #57606a; }}
</style></head>
<body><header class="top"><h1>Sluice</h1><span>worker {worker} · {now}</span></header>
<main><section class="tiles">{tiles}</section>
<h2 id="latest">Latest alerts ({count})</h2>
{alerts}
</main></body></html>
"""
