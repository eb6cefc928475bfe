"""Event-time windows of a scope: suspects in, closed windows out, waiting for analysis.

Tumbling, `window_s` of event time per scope. A window closes when the latest event time seen
in its scope passes its end by `allowed_lateness_s`, when it holds `max_bundle_events`, when it
got no event for `idle_close_s` (a tick), or at end of input (scan). A late event whose window
already closed reopens it; a reopened window closes on idle or at the end only, so a burst of
late events costs one more analysis, published as a new revision of the same alert. Events
without a timestamp join the newest window of their scope. A window's suspects are stored in
chunks, one per record of the suspects topic and window, written once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sluice.models.analyst import (
    TELEMETRY_KINDS,
    Analysis,
    Bundle,
    BundleEvent,
    EdgeLatency,
    Signal,
)
from sluice.stream.analysis.effects import AnalysisCounters
from sluice.stream.analysis.redaction import Redactor
from sluice.stream.analysis.state import (
    CloseReason,
    OpenWindow,
    PendingWindow,
    ScopeState,
    dump_chunk,
)
from sluice.stream.analysis.store import ChunkCache, StateStore
from sluice.stream.records import EARLIEST_EVENT_TIME, LATEST_EVENT_TIME, Analysed, Suspect
from sluice.stream.settings import PipelineSettings
from sluice.stream.signals.detector import SignalDetector

__all__ = ["ClosedWindow", "Windows", "bundle_of"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class ClosedWindow:
    """A closed window ready for analysis, with its suspects in order."""

    scope: str
    start: datetime
    end: datetime
    suspects: list[Suspect]
    reason: CloseReason
    seq: int = 0
    attempt: int = 0
    redactions: dict[str, int] = field(default_factory=dict)
    signals: list[Signal] | None = None
    line_signals: bool = True  # the signals include the lines' (settings `signals.enabled`)

    def analysed(self, analysis: Analysis, done_at: datetime) -> Analysed:
        """The record that reports this window's analysis back to the stream."""
        return Analysed(
            scope=self.scope,
            seq=self.seq,
            attempt=self.attempt,
            analysis=analysis.model_dump_json(),
            done_at=done_at,
        )

    def failed(self, error: str, done_at: datetime) -> Analysed:
        """The record that reports a failed analysis (the error's type, never its text)."""
        return Analysed(
            scope=self.scope, seq=self.seq, attempt=self.attempt, error=error, done_at=done_at
        )


def bundle_of(w: ClosedWindow) -> Bundle:
    """The analyst's input for a window."""
    versions = sorted({s.model_version for s in w.suspects})
    events = [
        BundleEvent(
            s.event.service,
            s.event.message,
            s.event.level,
            s.event.ts,
            s.event.trace_id,
            s.event.span_id,
            s.audit,
            s.score,
            s.event.source,
        )
        for s in w.suspects
    ]
    return Bundle(
        w.scope, events, w.start, w.end, ",".join(versions) or None, w.redactions, w.signals,
        w.line_signals,
    )  # fmt: skip


class Windows:
    """Opens, fills and closes a scope's windows in its `ScopeState`; suspects go to the store
    in chunks, and counts windows opened and closed (by what closed them) in `counters`."""

    def __init__(
        self,
        cfg: PipelineSettings,
        store: StateStore,
        cache: ChunkCache,
        wall: Callable[[], float],
        detector: Callable[[str], SignalDetector],
        counters: AnalysisCounters,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self._cache = cache
        self._wall = wall
        self._detector = detector
        self.counters = counters
        self._size = timedelta(seconds=cfg.window_s)
        self._late = timedelta(seconds=cfg.allowed_lateness_s)

    def _start_of(self, ts: datetime) -> datetime:
        n = (ts - _EPOCH) // self._size
        return _EPOCH + n * self._size

    def add(self, scope: str, st: ScopeState, suspects: Sequence[Suspect]) -> None:
        now = self._wall()
        buffers: dict[int, list[Suspect]] = {}
        for s in suspects:
            ts = s.event.ts
            if ts is not None and not EARLIEST_EVENT_TIME <= ts < LATEST_EVENT_TIME:
                ts = None  # suspects are input too: year 9999 plus a window would overflow
            if ts is None:
                start = (
                    max(w.start for w in st.open)
                    if st.open
                    else self._start_of(st.watermark or _EPOCH)
                )
            else:
                start = self._start_of(ts)
                if st.watermark is None or ts > st.watermark:
                    st.watermark = ts
            w = next((w for w in st.open if w.start == start), None)
            if w is None:
                mark = st.watermark or _EPOCH
                w = OpenWindow(start=start, late=start + self._size + self._late <= mark)
                st.open.append(w)
                self.counters.windows_opened += 1
            buffers.setdefault(id(w), []).append(s)
            w.n += 1
            w.touched = now
            if w.n >= self.cfg.max_bundle_events:
                self._close(scope, st, w, "full", buffers)
            if st.watermark is not None:
                for o in sorted(st.open, key=lambda o: o.start):
                    if o.start + self._size + self._late <= st.watermark and not o.late:
                        self._close(scope, st, o, "watermark", buffers)
        for w in st.open:
            self._flush(scope, st, w, buffers)
        st.touched = now

    def _flush(
        self, scope: str, st: ScopeState, w: OpenWindow, buffers: dict[int, list[Suspect]]
    ) -> None:
        batch = buffers.pop(id(w), None)
        if batch:
            key = f"chunk/{scope}/{st.next_chunk}"
            st.next_chunk += 1
            raw = dump_chunk(batch)
            self.store.put(key, raw)
            self._cache.put(raw, batch)
            w.chunks.append(key)

    def _close(
        self,
        scope: str,
        st: ScopeState,
        w: OpenWindow,
        reason: CloseReason,
        buffers: dict[int, list[Suspect]],
    ) -> None:
        self._flush(scope, st, w, buffers)
        st.open.remove(w)
        self.counters.windows_closed[reason] += 1
        end = w.start + self._size
        signals = None
        latencies: list[EdgeLatency] = []
        telemetry: list[Signal] = []
        sig = self.cfg.signals
        if sig.enabled or sig.telemetry:  # fixed at close: a replay analyses the same bundle
            detector = self._detector(scope)
            found = detector.signals(w.start.timestamp(), end.timestamp(), lines=sig.enabled)
            telemetry = [x for x in found if x.kind in TELEMETRY_KINDS]
            if sig.enabled:  # None: the lines' signals were not computed
                signals = [x for x in found if x.kind not in TELEMETRY_KINDS]
                latencies = detector.latencies(w.start.timestamp(), end.timestamp())
        st.pending.append(
            PendingWindow(
                seq=st.next_seq,
                start=w.start,
                end=end,
                reason=reason,
                chunks=w.chunks,
                n=w.n,
                signals=signals,
                telemetry=telemetry,
                latencies=latencies,
            )
        )
        st.next_seq += 1

    def close_idle(self, scope: str, st: ScopeState) -> bool:
        """Close the windows that got no event for `idle_close_s`; whether any closed."""
        now = self._wall()
        idle = [
            w
            for w in sorted(st.open, key=lambda w: w.start)
            if now - w.touched >= self.cfg.idle_close_s
        ]
        for w in idle:
            self._close(scope, st, w, "idle", {})
        return bool(idle)

    def close_all(self, scope: str, st: ScopeState) -> None:
        for w in sorted(st.open, key=lambda w: w.start):
            self._close(scope, st, w, "end", {})

    def window(self, scope: str, p: PendingWindow) -> ClosedWindow:
        """A pending window with its suspects in order, redacted as the settings say."""
        suspects: list[Suspect] = []
        for key in p.chunks:
            raw = self.store.get(key)
            if raw:
                suspects += self._cache.get(key, raw)
        suspects.sort(key=lambda s: (s.event.ts or _EPOCH, s.event.service, s.event.message))
        redactions: dict[str, int] = {}
        if self.cfg.redact:  # what leaves for the LLM and `feedback` is redacted text only
            redact = Redactor(self.cfg.redact_patterns)
            suspects = [
                s.model_copy(update={"event": s.event.model_copy(update={"message": m})})
                if (m := redact(s.event.message)) != s.event.message
                else s
                for s in suspects
            ]
            redactions = dict(redact.counts)
        signals = p.signals
        if p.telemetry:  # one list for the analyst, strongest first, as the detector gave it
            signals = sorted([*(p.signals or ()), *p.telemetry],
                             key=lambda s: (-s.strength, s.kind, s.service))  # fmt: skip
        return ClosedWindow(
            scope, p.start, p.end, suspects, p.reason, p.seq, p.attempt, redactions, signals,
            p.signals is not None,
        )  # fmt: skip

    def drop(self, chunks: Iterable[str]) -> None:
        """Forget a published window's suspects."""
        for key in chunks:
            raw = self.store.get(key)
            if raw:
                self._cache.drop(raw)
            self.store.delete(key)
