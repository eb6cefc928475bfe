"""The filter stage's side of signals: every batch counted into a small `SignalCounts` record
(events per bucket, service and line shape; gaps between services in a trace; steps of traces).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from sluice.stream.records import SignalCounts

__all__ = ["Key", "SignalCounter", "counts_of"]

#: Per batch: gaps per edge and bucket, gaps in all, and rows of each other kind (a counts
#: record stays < 400 kB whatever the events name).
_MAX_BATCH_GAPS = 10
_MAX_BATCH_GAP_ROWS = 2000
_MAX_BATCH_ROWS = 1000
#: Service names and line shapes are counted by their first characters (untrusted input).
_MAX_NAME = 100
_MAX_TEMPLATE = 160
_MAX_TRACE_ID = 128
_MAX_TRACE_SERVICES = 64  # services remembered per trace
Key = tuple[str, str]  # (service, template)


@dataclass(slots=True)
class _Trace:
    """What the counter remembers of one trace."""

    first: dict[str, float]  # when each service first logged in it
    svc: str  # the service that logged last
    at: float  # and when
    line: Key | None = None  # the last line (service, template)
    bucket: int = 0  # its bucket
    repeated: bool = False  # the last line repeated (its self-step is counted)


class SignalCounter:
    """The filter stage's side: counts batches into `SignalCounts` records. It keeps the traces
    it has seen (at most `max_traces`, none longer than `trace_ttl_s` of event time) so that
    hops and steps of a trace that spans batches are counted too.

    A service's caller is the service that logged last in the trace before the service first
    appeared (logs carry trace ids, not parent spans); a step is a line and the next line of
    its trace. A run of one line counts as one occurrence, and as one step to itself when it
    repeats (two log calls of one shape in a row: the second one missing is a step missing)."""

    def __init__(self, bucket_s: float, trace_ttl_s: float = 120.0, max_traces: int = 50_000):
        self.bucket_s = bucket_s
        self.trace_ttl_s = trace_ttl_s
        self.max_traces = max_traces
        self._traces: dict[str, _Trace] = {}

    def count(
        self,
        scope: str,
        ts: Sequence[float],
        services: Sequence[str],
        traces: Sequence[str | None],
        templates: Sequence[str] | None = None,
    ) -> SignalCounts:
        """One batch's events of one scope. Events without a time count at the batch's newest
        time. Bounded whatever the input: the busiest rows are kept."""
        known = [t for t in ts if t == t]  # not NaN
        latest = max(known) if known else 0.0
        size = self.bucket_s
        at = ts if len(known) == len(ts) else [t if t == t else latest for t in ts]
        buckets = [int(t // size) for t in at]
        names = _cut(services, _MAX_NAME)
        per = Counter(zip(buckets, names, strict=True))
        lines: Counter[tuple[int, str, str]] = Counter()
        shapes: Sequence[str] = ()
        if templates is not None:
            shapes = _cut(templates, _MAX_TEMPLATE)
            lines.update(zip(buckets, names, shapes, strict=True))
        gaps: list[tuple[int, str, str, float]] = []
        per_edge: dict[tuple[int, str, str], int] = {}
        traced: list[tuple[int, str, str]] = []  # counted at the end, in C
        steps: list[tuple[int, Key, Key]] = []
        state, shaped = self._traces, templates is not None
        for i, tid in enumerate(traces):
            if not tid:
                continue
            if len(tid) > _MAX_TRACE_ID:  # kept for minutes, 50,000 of them: bounded in bytes too
                tid = tid[:_MAX_TRACE_ID]
            t, n, svc = at[i], buckets[i], names[i]
            tr = state.get(tid)
            if tr is None:
                tr = state[tid] = _Trace({svc: t}, svc, t)
            else:
                # a hop into a service new to the trace, or the service's own time between two
                # of its lines in a row (its work: what CPU contention or a slow disk stretches)
                prev = tr.svc
                if (svc == prev or svc not in tr.first) and len(gaps) < _MAX_BATCH_GAP_ROWS:
                    key = (n, prev, svc)
                    c = per_edge.get(key, 0)
                    if c < _MAX_BATCH_GAPS:
                        per_edge[key] = c + 1
                        gaps.append((n, prev, svc, t - tr.at))
                if svc not in tr.first and len(tr.first) < _MAX_TRACE_SERVICES:
                    tr.first[svc] = t
                tr.svc, tr.at = svc, t
            if shaped:
                line = (svc, shapes[i])
                last = tr.line
                if line != last:
                    traced.append((n, svc, shapes[i]))
                    if last is not None:
                        steps.append((tr.bucket, last, line))
                    tr.line, tr.bucket, tr.repeated = line, n, False
                elif not tr.repeated:  # a line repeated is one step of its run (once per run)
                    steps.append((tr.bucket, line, line))
                    tr.repeated = True
        self._forget(latest)
        return _record(scope, size, per, gaps, lines, Counter(traced), Counter(steps))

    def _forget(self, now: float) -> None:
        """Traces beyond the bound, then those idle for `trace_ttl_s`, oldest first."""
        state = self._traces
        while len(state) > self.max_traces:
            del state[next(iter(state))]
        cutoff = now - self.trace_ttl_s
        for tid in list(state)[: max(0, len(state) - 1000)]:
            if state[tid].at < cutoff:
                del state[tid]


def _record(
    scope: str,
    bucket_s: float,
    per: Counter[tuple[int, str]],
    gaps: list[tuple[int, str, str, float]],
    lines: Counter[tuple[int, str, str]],
    traced: Counter[tuple[int, str, str]],
    steps: Counter[tuple[int, Key, Key]],
) -> SignalCounts:
    """The rows as a record, names and templates given once each; the busiest rows of each kind
    are kept (a record stays far below Kafka's record limit whatever the events name)."""
    names: dict[str, int] = {}
    shapes: dict[str, int] = {}

    def name(s: str) -> int:
        return names.setdefault(s, len(names))

    def shape(t: str) -> int:
        return shapes.setdefault(t, len(shapes))

    services = [(n, name(s), c) for (n, s), c in _busiest(per)]
    edges = [(n, name(a), name(b), round(max(0.0, g), 6)) for n, a, b, g in gaps]
    rows = [(n, name(s), shape(t), c, traced.get((n, s, t), 0))
            for (n, s, t), c in _busiest(lines)]  # fmt: skip
    moves = [(n, name(a[0]), shape(a[1]), name(b[0]), shape(b[1]), c)
             for (n, a, b), c in _busiest(steps)]  # fmt: skip
    return SignalCounts(scope=scope, bucket_s=bucket_s, names=list(names),
                        templates=list(shapes), services=services, gaps=edges, lines=rows,
                        steps=moves)  # fmt: skip


def _cut(texts: Sequence[str], n: int) -> Sequence[str]:
    """Each text at most `n` characters (the list itself when none is longer: no copy)."""
    if not texts or max(map(len, texts)) <= n:
        return texts
    return [t[:n] for t in texts]


_K = TypeVar("_K", bound=tuple[object, ...])


def _busiest(c: Counter[_K]) -> list[tuple[_K, int]]:
    """The rows of a counter, at most `_MAX_BATCH_ROWS` (the busiest)."""
    if len(c) > _MAX_BATCH_ROWS:
        return c.most_common(_MAX_BATCH_ROWS)
    return sorted(c.items())


def counts_of(
    scope: str,
    ts: Sequence[float],
    services: Sequence[str],
    traces: Sequence[str | None],
    bucket_s: float,
    templates: Sequence[str] | None = None,
) -> SignalCounts:
    """One batch counted on its own (no traces remembered from earlier batches)."""
    return SignalCounter(bucket_s).count(scope, ts, services, traces, templates)
