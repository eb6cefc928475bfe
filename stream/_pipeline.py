"""The pipeline's logic, shared by `sluice scan` (in-process) and the Faust agents (on Kafka).

parse -> screen (filter + audit sample) -> per-scope event-time windows -> analyse -> alerts and
feedback. Nothing here touches Kafka, so the two entry points cannot drift apart.

Windows: tumbling, `window_s` of event time per scope. A window closes when the latest event
time seen in its scope passes its end by `allowed_lateness_s`, when it holds `max_bundle_events`,
when the scope has been idle for `idle_close_s` (worker), or at end of input (scan). A late event,
whose window already closed, reopens that window; a reopened window gathers late events until it
is idle (or the input ends), so a burst of late events costs one more analysis, which publishes
a new revision of the same alert (the fingerprint is stable). Events without a timestamp join
the newest window of their scope.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from models.analyst import Analysis, Analyst, Bundle, BundleEvent
from models.filter import Filter, normalize_batch
from stream._records import Alert, Event, Feedback, Suspect
from stream._settings import PipelineSettings

__all__ = ["AlertBook", "ClosedWindow", "WindowCollector", "analyse_window", "screen"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _audit_draw(e: Event) -> float:
    """A uniform draw in [0, 1) fixed by the event's content: scan and worker sample alike."""
    key = f"{e.service}\x00{e.ts.isoformat() if e.ts else ''}\x00{e.message}".encode()
    return zlib.crc32(key) / 2**32


def screen(events: Sequence[Event], filt: Filter, cfg: PipelineSettings) -> list[Suspect]:
    """Score a batch; flagged events and an audit sample of the others become suspects."""
    if not events:
        return []
    a = filt.assess([e.message for e in events])
    out: list[Suspect] = []
    for e, score, flagged in zip(events, a.scores.tolist(), a.flagged.tolist(), strict=True):
        audit = not flagged and _audit_draw(e) < cfg.audit_rate
        if flagged or audit:
            out.append(
                Suspect(
                    event=e,
                    score=score,
                    model_version=a.model_version,
                    audit=audit,
                    sampling_probability=cfg.audit_rate if audit else 1.0,
                    scope=e.attributes.get("scope", cfg.scope),
                )
            )
    return out


@dataclass
class ClosedWindow:
    scope: str
    start: datetime
    end: datetime
    suspects: list[Suspect]
    reason: str  # watermark | full | idle | end


@dataclass
class _Open:
    start: datetime
    suspects: list[Suspect] = field(default_factory=list)
    touched: float = 0.0  # wall clock of the last event
    late: bool = False  # reopened by late events: closes on idle or at the end only


class WindowCollector:
    def __init__(self, cfg: PipelineSettings, wall: Callable[[], float]) -> None:
        self._size = timedelta(seconds=cfg.window_s)
        self._late = timedelta(seconds=cfg.allowed_lateness_s)
        self._max = cfg.max_bundle_events
        self._idle = cfg.idle_close_s
        self._wall = wall
        self._open: dict[str, dict[datetime, _Open]] = {}
        self._watermark: dict[str, datetime] = {}

    def _start_of(self, ts: datetime) -> datetime:
        n = (ts - _EPOCH) // self._size
        return _EPOCH + n * self._size

    def add(self, s: Suspect) -> list[ClosedWindow]:
        scope = s.scope
        windows = self._open.setdefault(scope, {})
        ts = s.event.ts
        if ts is None:
            start = max(windows) if windows else self._start_of(self._watermark.get(scope, _EPOCH))
        else:
            start = self._start_of(ts)
            if ts > self._watermark.get(scope, _EPOCH):
                self._watermark[scope] = ts
        w = windows.get(start)
        if w is None:
            mark = self._watermark.get(scope, _EPOCH)
            w = windows[start] = _Open(start, late=start + self._size + self._late <= mark)
        w.suspects.append(s)
        w.touched = self._wall()
        closed = []
        if len(w.suspects) >= self._max:
            closed.append(self._close(scope, start, "full"))
        current = self._watermark.get(scope)
        if current is not None:
            for st in sorted(windows):
                if st + self._size + self._late <= current and not windows[st].late:
                    closed.append(self._close(scope, st, "watermark"))
        return closed

    def _close(self, scope: str, start: datetime, reason: str) -> ClosedWindow:
        w = self._open[scope].pop(start)
        ordered = sorted(
            w.suspects, key=lambda s: (s.event.ts or _EPOCH, s.event.service, s.event.message)
        )
        return ClosedWindow(scope, start, start + self._size, ordered, reason)

    def close_idle(self) -> list[ClosedWindow]:
        now = self._wall()
        return [
            self._close(scope, st, "idle")
            for scope, ws in list(self._open.items())
            for st, w in sorted(ws.items())
            if now - w.touched >= self._idle
        ]

    def close_all(self) -> list[ClosedWindow]:
        return [
            self._close(scope, st, "end")
            for scope, ws in list(self._open.items())
            for st in sorted(ws)
        ]

    @property
    def open_events(self) -> int:
        return sum(len(w.suspects) for ws in self._open.values() for w in ws.values())


class AlertBook:
    """Revisions per fingerprint, and resolution when a scope's next window is quiet."""

    def __init__(self) -> None:
        self._revision: dict[str, int] = {}
        self._firing: dict[str, dict[str, Alert]] = {}

    def publish(
        self, scope: str, analysis: Analysis, evidence: dict[str, str], now: datetime
    ) -> list[Alert]:
        report = analysis.report
        firing = self._firing.setdefault(scope, {})
        if report.severity == "info":
            resolved = [
                a.model_copy(
                    update={"status": "resolved", "generated_at": now, "revision": self._next(fp)}
                )
                for fp, a in firing.items()
            ]
            firing.clear()
            return resolved
        fp = report.fingerprint()
        alert = Alert(
            fingerprint=fp,
            revision=self._next(fp),
            status="firing",
            report=report,
            provenance=analysis.provenance,
            evidence=evidence,
            generated_at=now,
        )
        firing[fp] = alert
        return [alert]

    def _next(self, fp: str) -> int:
        self._revision[fp] = self._revision.get(fp, 0) + 1
        return self._revision[fp]


def _bundle_event(s: Suspect) -> BundleEvent:
    e = s.event
    return BundleEvent(
        e.service, e.message, e.level, e.ts, e.trace_id, e.span_id, s.audit, s.score, e.source
    )


async def analyse_window(
    w: ClosedWindow,
    analyst: Analyst,
    book: AlertBook,
    cfg: PipelineSettings,
    clock: Callable[[], datetime],
) -> tuple[list[Alert], list[Feedback], Analysis]:
    """One bundle -> alerts (new, revised or resolved) and one feedback record per template."""
    now = w.end if cfg.alert_time == "event" else clock()
    versions = sorted({s.model_version for s in w.suspects})
    bundle = Bundle(
        w.scope, [_bundle_event(s) for s in w.suspects], w.start, w.end, ",".join(versions) or None
    )
    analysis = await analyst.analyze(bundle)
    alerts = book.publish(w.scope, analysis, analysis.templates, now)
    templates = normalize_batch([s.event.message for s in w.suspects])
    first: dict[str, Suspect] = {}
    all_audit: dict[str, bool] = {}
    for s, t in zip(w.suspects, templates, strict=True):
        first.setdefault(t, s)
        all_audit[t] = all_audit.get(t, True) and s.audit
    kind = analysis.provenance.analysis
    feedback = []
    for v in analysis.verdicts:
        template = analysis.templates.get(v.template_id)
        if template is None or template not in first:
            continue
        s = first[template]
        audit = all_audit[template]
        source = ("audit" if audit else "llm") if kind == "llm" else "heuristic"
        feedback.append(
            Feedback(
                template=template,
                text=s.event.message[:2000],
                label=v.relevant,
                source=source,
                weight=1.0 / s.sampling_probability
                if audit and s.sampling_probability > 0
                else 1.0,
                model_version=s.model_version,
                score=s.score,
                scope=w.scope,
            )
        )
    return alerts, feedback, analysis
