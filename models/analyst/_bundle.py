"""Bundles (the flagged events of one scope and window) and their compression into a prompt.

A bundle is compressed before it reaches the LLM: lines are grouped by normalized template with
counts, time span, services, levels and a few raw examples; the most severe and rarest groups
come first; groups are added until the token budget is spent, and what did not fit is counted in
the digest (and so in the report's provenance). The service call graph is derived from trace
context in the events themselves.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise

from sluice.models.analyst._signals import Signal
from sluice.models.analyst._tokens import TokenCounter, token_counter
from sluice.models.filter import normalize_batch

__all__ = [
    "Bundle",
    "BundleEvent",
    "Digest",
    "TemplateGroup",
    "compress",
    "is_alarming",
    "level_rank",
]

_LEVELS = {
    "FATAL": 5,
    "CRITICAL": 5,
    "ERROR": 4,
    "SEVERE": 4,
    "WARN": 3,
    "WARNING": 3,
    "INFO": 2,
    "DEBUG": 1,
    "TRACE": 0,
}
_ALARM = re.compile(
    r"exception|error|fail|timeout|timed out|refused|unavailable|fatal|panic|oom", re.IGNORECASE
)
EXAMPLE_CHARS = 400
#: Signals shown in a prompt at most (each one short line).
MAX_SIGNALS = 12


def level_rank(level: str) -> int:
    return _LEVELS.get(level.upper(), 2)


def is_alarming(level: str, text: str) -> bool:
    """ERROR or worse, or an alarm word (exception, timeout, refused, ...) at any level."""
    return level_rank(level) >= 4 or bool(_ALARM.search(text))


@dataclass(frozen=True, slots=True)
class BundleEvent:
    service: str
    text: str
    level: str = ""
    ts: datetime | None = None
    trace_id: str | None = None
    span_id: str | None = None
    audit: bool = False
    score: float | None = None
    source: str | None = None  # topic:partition:offset, for evidence


@dataclass(frozen=True)
class Bundle:
    scope: str
    events: Sequence[BundleEvent]
    window_start: datetime | None = None
    window_end: datetime | None = None
    filter_version: str | None = None
    #: What was redacted from the events' text, by placeholder (reported in the provenance).
    redactions: Mapping[str, int] = field(default_factory=dict)
    #: What the filter stage saw on every event of the window: silences, slow edges, new lines.
    #: None: no signals were computed; empty: computed, and nothing was unusual.
    signals: Sequence[Signal] | None = None
    #: Whether `signals` include the line signals (else only spans' and metrics', and the
    #: line rules, such as errors no signal marks counting half, do not apply).
    line_signals: bool = True


@dataclass
class TemplateGroup:
    id: str
    template: str
    count: int
    first: datetime | None
    last: datetime | None
    services: Counter[str]
    levels: Counter[str]
    examples: list[str]
    sources: list[str]
    audit: int
    severity: int

    @property
    def alarming(self) -> bool:
        return self.severity >= 4 or bool(_ALARM.search(self.template))

    @property
    def audit_only(self) -> bool:
        return self.audit == self.count


@dataclass
class Digest:
    scope: str
    groups: list[TemplateGroup]  # every group, in priority order
    included: list[TemplateGroup]  # those that fit the budget
    edges: list[tuple[str, str, int]]  # caller, callee, traces
    first: datetime | None
    last: datetime | None
    n_events: int
    prompt: str  # the fenced data section
    prompt_tokens: int
    tokens_exact: bool
    fence: str = field(repr=False, default="")

    @property
    def truncated(self) -> int:
        return len(self.groups) - len(self.included)

    @property
    def services(self) -> list[str]:
        return sorted({s for g in self.groups for s in g.services})


def _call_edges(events: Sequence[BundleEvent]) -> list[tuple[str, str, int]]:
    """Caller -> callee edges from traces: within a trace, services in order of first appearance.

    Logs carry trace and span ids but not parent spans, so a trace is read as the chain of
    services in the order they first logged; each consecutive pair counts one trace of evidence.
    """
    first_seen: dict[str, dict[str, float]] = defaultdict(dict)
    for i, e in enumerate(events):
        if not e.trace_id:
            continue
        key = e.ts.timestamp() if e.ts else float(i)
        seen = first_seen[e.trace_id]
        if e.service not in seen or key < seen[e.service]:
            seen[e.service] = key
    counts: Counter[tuple[str, str]] = Counter()
    for seen in first_seen.values():
        chain = sorted(seen, key=seen.__getitem__)
        counts.update(pairwise(chain))
    return [(a, b, n) for (a, b), n in counts.most_common()]


def _group(events: Sequence[BundleEvent], k: int) -> list[TemplateGroup]:
    templates = normalize_batch([e.text for e in events])
    acc: dict[str, TemplateGroup] = {}
    for e, t in zip(events, templates, strict=True):
        g = acc.get(t)
        if g is None:
            g = acc[t] = TemplateGroup("", t, 0, e.ts, e.ts, Counter(), Counter(), [], [], 0, 0)
        g.count += 1
        if e.ts and (g.first is None or e.ts < g.first):
            g.first = e.ts
        if e.ts and (g.last is None or e.ts > g.last):
            g.last = e.ts
        g.services[e.service] += 1
        g.levels[e.level.upper() or "?"] += 1
        g.severity = max(g.severity, level_rank(e.level) if e.level else 2)
        g.audit += e.audit
        if len(g.examples) < k and not e.audit:
            g.examples.append(e.text[:EXAMPLE_CHARS])
            if e.source:
                g.sources.append(e.source)
    groups = sorted(acc.values(), key=lambda g: (-g.severity, not g.alarming, g.count, g.template))
    for i, g in enumerate(groups, start=1):
        g.id = f"T{i}"
    return groups


def _render_group(g: TemplateGroup, fence: str, with_examples: bool) -> str:
    def clean(s: str) -> str:  # the fence can never be closed from inside the data
        return s.replace(fence, "[fence]")

    span = f"{g.first:%H:%M:%S}..{g.last:%H:%M:%S}" if g.first and g.last else "?"
    svc = ",".join(f"{s}({n})" for s, n in g.services.most_common(5))
    lv = ",".join(f"{lvl}({n})" for lvl, n in g.levels.most_common())
    lines = [
        f"[{g.id}] count={g.count} time={span} services={svc} levels={lv}"
        + (f" audit={g.audit}" if g.audit else ""),
        f"  template: {clean(g.template)}",
    ]
    if with_examples:  # audit-only groups carry none: the template is what gets a verdict
        lines += [f"  example: {clean(x)}" for x in g.examples]
    return "\n".join(lines)


def compress(
    bundle: Bundle,
    budget_tokens: int,
    examples_per_template: int = 3,
    counter: TokenCounter | None = None,
) -> Digest:
    """Group, order, and fit the bundle into budget_tokens (examples go first, then groups)."""
    counter = counter or token_counter()
    fence = f"LOGDATA-{secrets.token_hex(6)}"
    groups = _group(bundle.events, examples_per_template)
    edges = _call_edges(bundle.events)
    firsts = [g.first for g in groups if g.first]
    lasts = [g.last for g in groups if g.last]
    first, last = (min(firsts) if firsts else None), (max(lasts) if lasts else None)
    head = [
        f"scope: {bundle.scope}",
        f"window: {first.isoformat() if first else '?'} .. {last.isoformat() if last else '?'}",
        f"events: {len(bundle.events)} in {len(groups)} templates; "
        f"services: {', '.join(sorted({s for g in groups for s in g.services}))}",
    ]
    if edges:
        head.append(
            "call graph from traces (caller -> callee: traces): "
            + "; ".join(f"{a} -> {b}: {n}" for a, b, n in edges[:30])
        )
    if bundle.signals:  # log-derived text (service names, templates): inside the fence too
        head.append("signals (from every event, not only these lines):")
        head += [f"- {s.kind}: {s.text[:240]}" for s in bundle.signals[:MAX_SIGNALS]]
    used = counter.count("\n".join(head)) + 40
    blocks: list[str] = []
    included: list[TemplateGroup] = []
    for g in groups:
        block = _render_group(g, fence, with_examples=True)
        cost = counter.count(block) + 1
        if used + cost > budget_tokens:  # try again without raw examples
            block = _render_group(g, fence, with_examples=False)
            cost = counter.count(block) + 1
        if used + cost > budget_tokens:
            continue
        used += cost
        blocks.append(block)
        included.append(g)
    kept = {g.id for g in included}
    dropped = [g for g in groups if g.id not in kept]
    if dropped:
        blocks.append(
            f"[{len(dropped)} more templates with {sum(g.count for g in dropped)} "
            "events omitted: token budget]"
        )
    body = "\n".join(head + blocks)
    prompt = f"<{fence}>\n{body}\n</{fence}>"
    return Digest(
        bundle.scope,
        groups,
        included,
        edges,
        first,
        last,
        len(bundle.events),
        prompt,
        counter.count(prompt),
        counter.exact,
        fence,
    )
