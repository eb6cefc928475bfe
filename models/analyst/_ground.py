"""Is an LLM's answer about what it was given? Schema-valid is not correct: a small model writes
`T1` or `ts-basic-service}, {` as a service, an edge from a file name, a `critical` report that
says there is no incident; a large one sometimes names a service that is not there.

`ungrounded(answer, digest, signals)` lists what fails, in words the model can act on:

- every service named (affected, root cause, either end of a graph edge) is one the bundle holds:
  a service of its events, of its signals, or an end of its call graph;
- every graph edge is one the bundle shows: the call graph from traces, or a signal's edge
  (caller -> callee);
- every template id the report cites (`T3`) is one of the digest's;
- the severity agrees with `is_incident` (an incident is `critical` or `high`; what is not one
  is `warning` or `info`), and an incident names a root cause.

The analyst asks once more with these reasons (the repair); an answer that still fails is
replaced by the heuristic ranking's report, its reason in the provenance: the ranking is the
floor an LLM can only improve on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sluice.models.analyst._bundle import Digest
from sluice.models.analyst._schema import LLMAnswer
from sluice.models.analyst._signals import Signal

__all__ = ["ungrounded"]

_TEMPLATE_ID = re.compile(r"\bT\d+\b")
_SHOWN = 3  # names quoted per problem (an answer can name hundreds)


def _quote(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n[:80]) for n in names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def ungrounded(answer: LLMAnswer, digest: Digest, signals: Sequence[Signal] = ()) -> list[str]:
    """What in `answer` the bundle does not support (empty: grounded)."""
    services = {s for g in digest.groups for s in g.services}
    edges = {(a, b) for a, b, _n in digest.edges}
    for x in signals:
        services.add(x.service)
        if x.caller:
            services.add(x.caller)
            edges.add((x.caller, x.service))
    services |= {a for a, _ in edges} | {b for _, b in edges}
    problems = []
    named = [a.service for a in answer.affected_services]
    named += [c.service for c in answer.root_causes]
    named += [n for e in answer.service_graph for n in (e.source, e.target)]
    unknown = list(dict.fromkeys(n for n in named if n not in services))
    if unknown:
        problems.append(
            f"services not in the data: {_quote(unknown)}; name only services that appear in "
            "the events, the call graph or the signals"
        )
    made_up = list(
        dict.fromkeys(
            f"{e.source} -> {e.target}"
            for e in answer.service_graph
            if (e.source, e.target) not in edges
        )
    )
    if made_up:
        problems.append(
            f"graph edges not in the data: {_quote(made_up)}; give only edges of the call graph "
            "or the signals (caller -> callee), or none"
        )
    ids = {g.id for g in digest.groups}
    cited = " ".join(
        [
            answer.title,
            answer.summary,
            *(a.evidence for a in answer.affected_services),
            *(c.description for c in answer.root_causes),
        ]
    )
    foreign = sorted(set(_TEMPLATE_ID.findall(cited)) - ids, key=lambda t: int(t[1:]))
    if foreign:
        problems.append(f"template ids not in the digest: {_quote(foreign)}")
    if answer.is_incident and answer.severity in ("warning", "info"):
        problems.append(
            f"is_incident is true but severity is {answer.severity}: an incident is "
            "critical or high"
        )
    if not answer.is_incident and answer.severity in ("critical", "high"):
        problems.append(
            f"is_incident is false but severity is {answer.severity}: what is not an "
            "incident is warning or info"
        )
    if answer.is_incident and not answer.root_causes:
        problems.append("an incident without a root cause: name the most likely service")
    return problems
