"""The filter stage's side of spans and metric points: each batch folded into per-bucket figures
(the `spans`, `calls` and `metrics` rows of a `SignalCounts` record), and the few spans worth a
look forwarded as exemplars. A span stream is often ten times the log stream: what travels on is
a few rows per bucket, service and edge, never the spans.

Why these figures: the faults that log nothing show in them, and each points at one service.

- A span's **self time** (its duration less its children's) is its service's own work: CPU
  contention stretches it; a slow callee does not (that time is the child's).
- A call between services is a span whose parent is in another service. Per edge (caller ->
  callee): the calls, their duration at the caller (the parent, the client side), and the **time
  outside the callee** (the parent's duration less the child's, where the parent made that one
  call): the network and the queues in front of the callee, which a network delay stretches and
  the callee's own spans never see.
- Times are summed as logarithms (of microseconds): a bucket's geometric mean, which a single
  slow outlier (a GC pause) cannot carry the way it carries a mean.

Spans usually arrive children first (an SDK exports a span when it ends): children wait for their
parent by its id (bounded); a child that comes after its parent still counts its call. A metric
point adds its value (a histogram its mean) to its service's row for that metric and bucket.

Exemplars: a call far slower than its edge's usual (the filter stage's own running figures, a few
minutes of history), a span far longer in self time than its service's usual, or a failed
span (status error) becomes one event, at most one per edge and kind a batch and `max_exemplars`
in all: they open the analysis window that the signals then explain (a fault that logs nothing
would otherwise never reach the analysis stage).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sluice.stream.records import SignalCounts

__all__ = ["Exemplar", "TelemetryFolder"]

_MAX_NAME = 100
_MAX_KIDS = 16  # children remembered per parent (their sum counts all)
_MAX_METRIC = 120
#: Running figures for exemplars: weight of one bucket, buckets before judging, how far out.
_ALPHA = 0.1
_MIN_HISTORY = 6
_EXEMPLAR_SD = 4.0
_MIN_SD = 0.25  # ln units: at least x1.3 per sd, so a tight edge is not an exemplar per jitter


@dataclass(slots=True)
class _Kids:
    total: float = 0.0  # seconds, all children
    n: int = 0
    items: list[tuple[str, float, bool]] = field(default_factory=list)  # service, s, failed


@dataclass(slots=True)
class _Run:
    """A key's usual ln microseconds for exemplars: per event-time bucket, the spans' mean and
    spread; across buckets, exponentially weighted, a bucket moving the mean by at most two
    standard deviations (a fault that lasts minutes stays unusual for minutes: a per-span
    average would call it usual within a second of spans)."""

    mean: float = 0.0
    var: float = 0.0
    buckets: int = 0
    bucket: int = -1
    n: int = 0
    total: float = 0.0
    squares: float = 0.0

    def far(self, x: float, bucket: int) -> float:
        """How many standard deviations above the usual `x` is (0 while young); then counts it
        in its bucket."""
        if bucket != self.bucket:
            self._fold()
            self.bucket = bucket
        self.n += 1
        self.total += x
        self.squares += x * x
        if self.buckets < _MIN_HISTORY:
            return 0.0
        return (x - self.mean) / max(math.sqrt(self.var), _MIN_SD)

    def _fold(self) -> None:
        if not self.n:
            return
        m = self.total / self.n
        spread = max(0.0, self.squares / self.n - m * m) if self.n > 1 else None
        if self.buckets == 0:
            self.mean, self.var = m, spread or 0.0
        else:
            bound = 2 * max(math.sqrt(self.var), _MIN_SD)
            self.mean += _ALPHA * max(-bound, min(bound, m - self.mean))
            if spread is not None:
                self.var += _ALPHA * (spread - self.var)
        self.buckets += 1
        self.n, self.total, self.squares = 0, 0.0, 0.0


@dataclass(frozen=True, slots=True)
class Exemplar:
    """One span worth a look, as the event the analysis stage will read."""

    scope: str
    record: int  # which record of the batch it came in (-1: unknown)
    event: dict[str, Any]


def _ln_us(seconds: float) -> float:
    return math.log(max(seconds * 1e6, 1.0))


class _Rows:
    """One scope's rows of one batch, names given once; at most `max_rows` of each kind (a row
    beyond is dropped and counted in `dropped`): a record stays far below Kafka's limit whatever
    the spans name."""

    __slots__ = ("calls", "dropped", "max_rows", "metrics", "selves")

    def __init__(self, max_rows: int = 2000) -> None:
        self.max_rows = max_rows
        self.dropped = 0
        self.selves: dict[tuple[int, str], list[float]] = {}  # n, sum ln, errors
        self.calls: dict[tuple[int, str, str], list[float]] = {}
        self.metrics: dict[tuple[int, str, str], list[float]] = {}  # points, sum

    def self_time(self, bucket: int, svc: str, seconds: float, failed: bool) -> None:
        row = self.selves.get((bucket, svc))
        if row is None:
            if len(self.selves) >= self.max_rows:
                self.dropped += 1
                return
            row = self.selves[(bucket, svc)] = [0, 0.0, 0]
        row[0] += 1
        row[1] += _ln_us(seconds)
        row[2] += failed

    def call(
        self, bucket: int, a: str, b: str, client: float, outside: float | None, failed: bool
    ) -> None:
        row = self.calls.get((bucket, a, b))
        if row is None:
            if len(self.calls) >= self.max_rows:
                self.dropped += 1
                return
            row = self.calls[(bucket, a, b)] = [0, 0.0, 0, 0.0, 0]
        row[0] += 1
        row[1] += _ln_us(client)
        if outside is not None:
            row[2] += 1
            row[3] += _ln_us(outside)
        row[4] += failed

    def record(self, scope: str, bucket_s: float) -> SignalCounts:
        names: dict[str, int] = {}
        metric_names: dict[str, int] = {}

        def at(s: str) -> int:
            return names.setdefault(s, len(names))

        def metric(m: str) -> int:
            return metric_names.setdefault(m, len(metric_names))

        spans = [
            (n, at(s), int(r[0]), round(r[1], 4), int(r[2]))
            for (n, s), r in sorted(self.selves.items())
        ]
        calls = [
            (n, at(a), at(b), int(r[0]), round(r[1], 4), int(r[2]), round(r[3], 4), int(r[4]))
            for (n, a, b), r in sorted(self.calls.items())
        ]
        metrics = [
            (n, at(s), metric(m), int(r[0]), r[1]) for (n, s, m), r in sorted(self.metrics.items())
        ]
        return SignalCounts(
            scope=scope,
            bucket_s=bucket_s,
            names=list(names),
            spans=spans,
            calls=calls,
            metric_names=list(metric_names),
            metrics=metrics,
        )


class TelemetryFolder:
    """Folds spans and metric points, batch by batch, into `SignalCounts` rows per scope, and
    picks exemplars. Keeps children waiting for their parents (at most `max_pending`) and the
    running figures exemplars are judged by (at most `max_keys` edges and services)."""

    def __init__(
        self,
        bucket_s: float,
        max_pending: int = 50_000,
        max_exemplars: int = 10,
        max_keys: int = 2000,
        max_rows: int = 2000,
    ) -> None:
        self.bucket_s = bucket_s
        self.max_pending = max_pending
        self.max_exemplars = max_exemplars
        self.max_keys = max_keys
        self.max_rows = max_rows
        # two generations each (the older dropped whole when the newer fills): bounded, O(1)
        self._kids: dict[str, _Kids] = {}  # parent span id -> its children so far
        self._old_kids: dict[str, _Kids] = {}
        self._parents: dict[str, tuple[str, float]] = {}  # span id -> service, s (came first)
        self._old_parents: dict[str, tuple[str, float]] = {}
        self._usual: dict[tuple[str, str, str], _Run] = {}  # (kind, a, b) -> ln us
        self.dropped = 0  # rows beyond `max_rows` in a batch (counted, never sent)

    def fold(
        self,
        spans: Sequence[Mapping[str, Any]],
        points: Sequence[Mapping[str, Any]] = (),
        default_scope: str = "default",
        default_service: str = "unknown",
        span_records: Sequence[int] = (),
    ) -> tuple[dict[str, SignalCounts], list[Exemplar]]:
        """One batch's spans and points: rows per scope, and the exemplars among the spans."""
        rows: dict[str, _Rows] = {}
        exemplars: list[Exemplar] = []
        picked: set[tuple[str, str, str]] = set()
        size = self.bucket_s
        kids_of, parents = self._kids, self._parents
        for j, sp in enumerate(spans):
            scope = sp.get("scope") or default_scope
            r = rows.get(scope)
            if r is None:
                r = rows[scope] = _Rows(self.max_rows)
            svc = (sp.get("service") or default_service)[:_MAX_NAME]
            dur = float(sp["duration_s"])
            start = float(sp["start"])
            failed = sp.get("status") == "error"
            n = int(start // size)
            sid, parent = sp.get("span_id"), sp.get("parent_span_id")
            kids = (kids_of.pop(sid, None) or self._old_kids.pop(sid, None)) if sid else None
            own = dur - kids.total if kids is not None else dur
            r.self_time(n, svc, max(own, 0.0), failed)
            why: tuple[str, str, str, float, float] | None = None  # kind, a, b, ln x, far
            if kids is not None:
                for callee, child, child_failed in kids.items:
                    if callee == svc:
                        continue
                    outside = dur - child if kids.n == 1 else None
                    r.call(n, svc, callee, dur, outside, child_failed)
                    got = self._judge(("call", svc, callee), _ln_us(dur), n)
                    if got > _EXEMPLAR_SD and (why is None or got > why[4]):
                        why = ("call", svc, callee, dur, got)
            if parent:
                up = parents.get(parent) or self._old_parents.get(parent)
                if up is not None and up[0] != svc:  # the parent came first: its call now
                    r.call(n, up[0], svc, up[1], None, failed)
                elif up is None:
                    k = kids_of.get(parent) or self._old_kids.get(parent)
                    if k is None:
                        k = kids_of[parent] = _Kids()
                    k.total += dur
                    k.n += 1
                    if len(k.items) < _MAX_KIDS:
                        k.items.append((svc, dur, failed))
            if sid:
                parents[sid] = (svc, dur)
            got = self._judge(("self", svc, ""), _ln_us(max(own, 0.0)), n)
            if got > _EXEMPLAR_SD and (why is None or got > why[4]):
                why = ("self", svc, "", max(own, 0.0), got)
            if failed:
                why = ("failed", svc, "", dur, math.inf)
            if why is not None and len(exemplars) < self.max_exemplars:
                key = why[:3]
                if key not in picked:
                    picked.add(key)
                    rec = span_records[j] if j < len(span_records) else -1
                    exemplars.append(Exemplar(scope, rec, self._event(sp, svc, why)))
        for p in points:
            self._point(p, rows, default_scope, default_service)
        self._forget()
        self.dropped += sum(r.dropped for r in rows.values())
        return {scope: r.record(scope, size) for scope, r in rows.items()}, exemplars

    def _judge(self, key: tuple[str, str, str], x: float, bucket: int) -> float:
        run = self._usual.get(key)
        if run is None:
            if len(self._usual) >= self.max_keys:
                return 0.0
            run = self._usual[key] = _Run()
        return run.far(x, bucket)

    def _usual_ms(self, key: tuple[str, str, str]) -> float:
        run = self._usual.get(key)
        return math.exp(run.mean) / 1000 if run is not None else 0.0

    def _event(
        self, sp: Mapping[str, Any], svc: str, why: tuple[str, str, str, float, float]
    ) -> dict[str, Any]:
        kind, a, b, seconds, _far = why
        op = str(sp.get("operation", ""))[:200]
        if kind == "failed":
            said = sp.get("status_message") or "no message"
            message, level, about = f"failed span in {svc}: {op}: {said}", "ERROR", svc
        elif kind == "call":
            usual = self._usual_ms(("call", a, b))
            message = (
                f"slow call {a} -> {b} ({op}): {seconds * 1000:.1f} ms, usually {usual:.1f} ms"
            )
            level, about = "WARN", b
        else:
            usual = self._usual_ms(("self", svc, ""))
            message = (
                f"slow work in {svc} ({op}): self time {seconds * 1000:.1f} ms, usually "
                f"{usual:.1f} ms"
            )
            level, about = "WARN", svc
        attrs = {"sluice.exemplar": kind, "operation": op}
        if kind == "call":
            attrs["caller"] = a
        if sp.get("scope"):
            attrs["scope"] = str(sp["scope"])
        return {
            "ts": float(sp["start"]),
            "service": about,
            "level": level,
            "message": message,
            "trace_id": sp.get("trace_id"),
            "span_id": sp.get("span_id"),
            "attributes": attrs,
        }

    def _point(
        self, p: Mapping[str, Any], rows: dict[str, _Rows], default_scope: str, default_service: str
    ) -> None:
        value = p.get("value")
        if value is None:
            count, total = p.get("count"), p.get("sum")
            if not count or total is None:
                return
            value = total / count
        t = p.get("time")
        if not isinstance(value, int | float) or not math.isfinite(value) or not t:
            return
        scope = p.get("scope") or default_scope
        r = rows.get(scope)
        if r is None:
            r = rows[scope] = _Rows(self.max_rows)
        key = (
            int(float(t) // self.bucket_s),
            (p.get("service") or default_service)[:_MAX_NAME],
            str(p["name"])[:_MAX_METRIC],
        )
        row = r.metrics.get(key)
        if row is None:
            if len(r.metrics) >= self.max_rows:
                r.dropped += 1
                return
            row = r.metrics[key] = [0, 0.0]
        row[0] += 1
        row[1] += float(value)

    def _forget(self) -> None:
        """Children whose parent never came, and parents kept for late children: a generation
        that reaches half of `max_pending` becomes the old one, and the old one goes."""
        half = self.max_pending // 2
        if len(self._kids) > half:
            self._old_kids, self._kids = self._kids, {}
        if len(self._parents) > half:
            self._old_parents, self._parents = self._parents, {}
