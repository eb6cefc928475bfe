"""The analysis stage's logic, shared by `sluice scan` (a dict) and the worker (a Faust table).

suspects -> per-scope event-time windows -> closed windows pending analysis -> results published
in order as alerts (new, revised, resolved) and feedback. All of it is state in a `StateStore`,
so in the worker it lives in a table with a changelog topic and survives the worker.

Windows: tumbling, `window_s` of event time per scope. A window closes when the latest event
time seen in its scope passes its end by `allowed_lateness_s`, when it holds `max_bundle_events`,
when it got no event for `idle_close_s` (a tick), or at end of input (scan). A late event whose
window already closed reopens it; a reopened window closes on idle or at the end only, so a burst
of late events costs one more analysis, published as a new revision of the same alert. Events
without a timestamp join the newest window of their scope.

Closed windows get a sequence number and wait in `pending`. Their analyses may run concurrently
and finish in any order; results are published strictly in sequence, so revisions and
resolutions come out as if analysed one by one (and as `scan` does). A degraded result (LLM down)
is published once, and its window queued again (`degraded_retries`): while the LLM stays down, a
retry that degrades again publishes nothing, and the windows of a scope that degrade join the one
retry already queued there, so when the LLM answers, one analysis over all of them is the next
revision (not one per window, nor one per retry). An analysis that raised is retried, and
dead-lettered after `max_analysis_failures`.

Keys of the store: `scope/<scope>` (a ScopeState), `chunk/<scope>/<n>` (suspects of a window,
written once per record of the suspects topic and window), `part/<p>` (the scopes of a suspects
partition and the last offset applied, so a record replayed after a crash is not applied twice).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import BaseModel, Field, TypeAdapter

from sluice.models.analyst import LLM_DOWN, Analysis, Bundle, BundleEvent, EdgeLatency, Signal
from sluice.models.filter import normalize_batch
from sluice.stream.analysis.redaction import Redactor
from sluice.stream.analysis.triage import TriageCounters
from sluice.stream.delivery.controls import Controls
from sluice.stream.records import (
    EARLIEST_EVENT_TIME,
    LATEST_EVENT_TIME,
    Alert,
    Analysed,
    DeadLetter,
    Feedback,
    Outcome,
    SignalCounts,
    SignalVerdict,
    Suspect,
    SuspectBatch,
)
from sluice.stream.settings import PipelineSettings, SignalSettings
from sluice.stream.signals.detector import SignalDetector

__all__ = [
    "AnalysisState",
    "ChunkCache",
    "ClosedWindow",
    "MemoryStore",
    "Published",
    "StagedStore",
    "StateStore",
    "bundle_of",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SUSPECTS: TypeAdapter[list[Suspect]] = TypeAdapter(list[Suspect])
#: Parsed signal detectors a cache keeps (one per live scope is what is used).
_MAX_DETECTORS = 64
#: Revision counters kept per scope; the state is parsed per record, so it stays small.
_MAX_REVISIONS_PER_SCOPE = 1000


class StateStore(Protocol):
    """Where the analysis state lives: bytes by key."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> None: ...


class MemoryStore:
    """A StateStore in a dict (scan, tests)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class StagedStore:
    """Writes held back until `apply()`: the worker publishes alerts before the state says so."""

    def __init__(self, inner: StateStore) -> None:
        self._inner = inner
        self._staged: dict[str, bytes | None] = {}

    def get(self, key: str) -> bytes | None:
        if key in self._staged:
            return self._staged[key]
        return self._inner.get(key)

    def put(self, key: str, value: bytes) -> None:
        self._staged[key] = value

    def delete(self, key: str) -> None:
        self._staged[key] = None

    def apply(self) -> None:
        for key, value in self._staged.items():
            if value is None:
                self._inner.delete(key)
            else:
                self._inner.put(key, value)
        self._staged.clear()


class ChunkCache:
    """Parsed forms of stored values (suspects of chunks, signal detectors of scopes), keyed by
    the stored bytes themselves.

    Equal bytes are equal content, so an entry can never be stale; a value written by this
    process is never parsed back, one restored from the changelog is parsed once. Bounded: the
    oldest entries go first (a miss costs a parse, never a wrong answer).
    """

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self._entries: dict[bytes, list[Suspect]] = {}
        self._detectors: dict[bytes, SignalDetector] = {}
        self._bytes = 0
        self._max = max_bytes

    def put(self, raw: bytes, suspects: list[Suspect]) -> None:
        if raw in self._entries:
            return
        while self._entries and self._bytes + len(raw) > self._max:
            self._bytes -= len(next(iter(self._entries)))
            del self._entries[next(iter(self._entries))]
        self._entries[raw] = suspects
        self._bytes += len(raw)

    def get(self, raw: bytes) -> list[Suspect]:
        got = self._entries.get(raw)
        if got is None:
            got = _SUSPECTS.validate_json(raw)
            self.put(raw, got)
        return got

    def drop(self, raw: bytes) -> None:
        if self._entries.pop(raw, None) is not None:
            self._bytes -= len(raw)

    def detector(
        self, raw: bytes | None, cfg: SignalSettings, take: bool = False
    ) -> SignalDetector:
        """The signal detector a scope's stored bytes hold, parsed once (a load costs as much as
        the counting it keeps). `take` removes it from the cache: the caller changes it, and the
        bytes it came from no longer describe it (it keeps the new ones with `keep_detector`)."""
        if raw is None:
            return SignalDetector(cfg)
        got = self._detectors.pop(raw, None) if take else self._detectors.get(raw)
        if got is None:
            got = SignalDetector.load(raw, cfg)
            if not take:
                self.keep_detector(raw, got)
        return got

    def keep_detector(self, raw: bytes, detector: SignalDetector) -> None:
        while len(self._detectors) >= _MAX_DETECTORS:
            del self._detectors[next(iter(self._detectors))]
        self._detectors[raw] = detector


class _Open(BaseModel):
    start: datetime
    chunks: list[str] = Field(default_factory=list)
    n: int = 0
    touched: float = 0.0  # wall clock (epoch seconds) of the last event
    late: bool = False  # reopened by late events: closes on idle or at the end only


class _Pending(BaseModel):
    seq: int
    start: datetime
    end: datetime
    reason: str  # watermark | full | idle | end
    chunks: list[str]
    n: int
    attempt: int = 0
    failures: int = 0
    not_before: float = 0.0
    result: str | None = None  # the Analysis as JSON once it is known
    done_at: datetime | None = None
    given_up: bool = False  # failed max_analysis_failures times: published as a dead letter
    signals: list[dict[str, object]] | None = None  # at close, when signals are enabled
    latencies: list[EdgeLatency] = Field(default_factory=list)  # at close, likewise


class ScopeState(BaseModel):
    watermark: datetime | None = None
    open: list[_Open] = Field(default_factory=list)
    pending: list[_Pending] = Field(default_factory=list)
    next_seq: int = 0
    next_chunk: int = 0
    revisions: dict[str, int] = Field(default_factory=dict)
    firing: dict[str, str] = Field(default_factory=dict)  # fingerprint -> Alert JSON
    firing_at: dict[str, float] = Field(default_factory=dict)  # fingerprint -> wall time raised
    firing_since: dict[str, float] = Field(default_factory=dict)  # fingerprint -> episode start
    touched: float = 0.0


class _Partition(BaseModel):
    scopes: list[str] = Field(default_factory=list)
    applied: int = -1


@dataclass
class ClosedWindow:
    """A closed window ready for analysis, with its suspects in order."""

    scope: str
    start: datetime
    end: datetime
    suspects: list[Suspect]
    reason: str
    seq: int = 0
    attempt: int = 0
    redactions: dict[str, int] = field(default_factory=dict)
    signals: list[Signal] | None = None

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


@dataclass
class AnalysisCounters:
    """What the analysis stage did, for metrics: windows by what closed them, analyses by kind,
    alerts by severity. An `AnalysisState` counts into its own; the worker merges them into the
    process's totals only once the record's effects are committed, so a retry counts once."""

    windows_opened: int = 0
    windows_closed: Counter[str] = field(default_factory=Counter)  # watermark|full|idle|end
    windows_analysed: Counter[str] = field(default_factory=Counter)  # llm|heuristic|degraded
    windows_given_up: int = 0
    alerts: Counter[str] = field(default_factory=Counter)  # severity
    #: new templates' triage: counted as it happens (it is outside the records' commits)
    triage: TriageCounters = field(default_factory=TriageCounters)

    def merge(self, other: AnalysisCounters) -> None:
        self.windows_opened += other.windows_opened
        self.windows_closed.update(other.windows_closed)
        self.windows_analysed.update(other.windows_analysed)
        self.windows_given_up += other.windows_given_up
        self.alerts.update(other.alerts)


@dataclass
class Published:
    """What publishing a scope's finished analyses produced, in order."""

    alerts: list[Alert] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    windows: int = 0

    def extend(self, other: Published) -> None:
        self.alerts += other.alerts
        self.feedback += other.feedback
        self.outcomes += other.outcomes
        self.dead += other.dead
        self.windows += other.windows


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
        w.scope, events, w.start, w.end, ",".join(versions) or None, w.redactions, w.signals
    )


class AnalysisState:
    """The analysis stage over a StateStore. Every method is synchronous and deterministic."""

    def __init__(
        self,
        cfg: PipelineSettings,
        store: StateStore,
        wall: Callable[[], float],
        suspects_topic: str = "suspects",
        cache: ChunkCache | None = None,
        controls: Controls | None = None,
    ) -> None:
        self.cfg = cfg
        self._controls = controls
        self.store = store
        self._cache = cache if cache is not None else ChunkCache()
        self._wall = wall
        self._topic = suspects_topic
        self._size = timedelta(seconds=cfg.window_s)
        self._late = timedelta(seconds=cfg.allowed_lateness_s)
        self.counters = AnalysisCounters()

    # -- state access ---------------------------------------------------------------------------

    def scope_state(self, scope: str) -> ScopeState:
        raw = self.store.get(f"scope/{scope}")
        return ScopeState.model_validate_json(raw) if raw else ScopeState()

    def _save(self, scope: str, st: ScopeState) -> None:
        self.store.put(f"scope/{scope}", st.model_dump_json().encode())

    def _partition(self, p: int) -> _Partition:
        raw = self.store.get(f"part/{p}")
        return _Partition.model_validate_json(raw) if raw else _Partition()

    def _save_partition(self, p: int, part: _Partition) -> None:
        self.store.put(f"part/{p}", part.model_dump_json().encode())

    def scopes(self, partition: int) -> list[str]:
        return list(self._partition(partition).scopes)

    def applied(self, partition: int, offset: int) -> bool:
        """Whether the record at offset was applied already (a replay after a crash)."""
        return offset <= self._partition(partition).applied

    def mark_applied(self, partition: int, offset: int) -> None:
        part = self._partition(partition)
        part.applied = max(part.applied, offset)
        self._save_partition(partition, part)

    # -- records of the suspects topic ----------------------------------------------------------

    def on_suspects(
        self, partition: int, offset: int | None, rec: SuspectBatch
    ) -> list[DeadLetter]:
        """Add a batch of suspects; a new scope beyond `max_live_scopes` is dead-lettered."""
        refused = self._admit(partition, offset, rec)
        if refused:
            return refused
        self.add(rec.scope, rec.suspects)
        return []

    def on_counts(self, partition: int, offset: int | None, rec: SignalCounts) -> list[DeadLetter]:
        """Fold a batch's counts into the scope's signal baselines (kept in the store, so they
        survive the worker like the rest of the state)."""
        refused = self._admit(partition, offset, rec)
        if refused:
            return refused
        key = f"signals/{rec.scope}"
        detector = self._cache.detector(self.store.get(key), self.cfg.signals, take=True)
        detector.add_counts(rec)
        raw = detector.dump()
        self.store.put(key, raw)
        self._cache.keep_detector(raw, detector)
        st = self.scope_state(rec.scope)
        if self._wall() - st.touched >= 60:  # a scope that only logs normally is live too
            st.touched = self._wall()
            self._save(rec.scope, st)
        return []

    def _admit(
        self, partition: int, offset: int | None, rec: SuspectBatch | SignalCounts
    ) -> list[DeadLetter]:
        """A new scope joins the partition's live scopes, unless `max_live_scopes` are live."""
        part = self._partition(partition)
        if rec.scope not in part.scopes:
            if len(part.scopes) >= self.cfg.max_live_scopes:
                reason = (
                    f"scope {rec.scope!r} not admitted: {len(part.scopes)} live scopes on "
                    f"partition {partition} (max_live_scopes)"
                )
                return [DeadLetter.of(rec.to_bytes(), self._topic, partition, offset, reason)]
            part.scopes.append(rec.scope)
            self._save_partition(partition, part)
        return []

    def _detector(self, scope: str) -> SignalDetector:
        """The scope's detector as the store holds it (read only)."""
        return self._cache.detector(self.store.get(f"signals/{scope}"), self.cfg.signals)

    def on_tick(self, partition: int) -> None:
        """Close idle windows and forget scopes with nothing left to do."""
        part = self._partition(partition)
        now = self._wall()
        kept = []
        for scope in part.scopes:
            self.close_idle(scope)
            st = self.scope_state(scope)
            quiet = not (st.open or st.pending or st.firing)
            if quiet and now - st.touched >= self.cfg.scope_evict_s:
                # Windows, alerts and signal baselines go; revision counters stay (small), so an
                # incident that comes back continues its revisions instead of reusing one.
                self._save(scope, ScopeState(revisions=st.revisions, touched=st.touched))
                self.store.delete(f"signals/{scope}")
            else:
                kept.append(scope)
        if kept != part.scopes:
            part.scopes = kept
            self._save_partition(partition, part)

    def on_analysed(self, rec: Analysed) -> None:
        """Record a finished analysis (the first result for an attempt wins)."""
        st = self.scope_state(rec.scope)
        p = next((p for p in st.pending if p.seq == rec.seq and p.attempt == rec.attempt), None)
        if p is None or p.result is not None or p.given_up:
            return  # a duplicate, or a window already published
        if rec.analysis is not None:
            p.result, p.done_at = rec.analysis, rec.done_at
        else:
            p.failures += 1
            p.not_before = self._wall() + self._retry_delay(p.failures - 1)
            p.done_at = rec.done_at
            if p.failures < self.cfg.max_analysis_failures:
                # to the back of the queue: a failing window does not hold up the others
                st.pending.remove(p)
                p.seq, st.next_seq = st.next_seq, st.next_seq + 1
                st.pending.append(p)
            else:
                p.given_up = True  # `publish` dead-letters it in its turn
                p.reason = f"analysis failed {p.failures} times: {rec.error}"
        self._save(rec.scope, st)

    # -- windows ---------------------------------------------------------------------------------

    def _start_of(self, ts: datetime) -> datetime:
        n = (ts - _EPOCH) // self._size
        return _EPOCH + n * self._size

    def add(self, scope: str, suspects: Sequence[Suspect]) -> None:
        st = self.scope_state(scope)
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
                w = _Open(start=start, late=start + self._size + self._late <= mark)
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
        self._save(scope, st)

    def _flush(
        self, scope: str, st: ScopeState, w: _Open, buffers: dict[int, list[Suspect]]
    ) -> None:
        batch = buffers.pop(id(w), None)
        if batch:
            key = f"chunk/{scope}/{st.next_chunk}"
            st.next_chunk += 1
            raw = _SUSPECTS.dump_json(batch)
            self.store.put(key, raw)
            self._cache.put(raw, batch)
            w.chunks.append(key)

    def _close(
        self, scope: str, st: ScopeState, w: _Open, reason: str, buffers: dict[int, list[Suspect]]
    ) -> None:
        self._flush(scope, st, w, buffers)
        st.open.remove(w)
        self.counters.windows_closed[reason] += 1
        end = w.start + self._size
        signals = None
        latencies: list[EdgeLatency] = []
        if self.cfg.signals.enabled:  # fixed at close: a replay analyses the same bundle
            detector = self._detector(scope)
            found = detector.signals(w.start.timestamp(), end.timestamp())
            signals = [asdict(x) for x in found]
            latencies = detector.latencies(w.start.timestamp(), end.timestamp())
        st.pending.append(
            _Pending(
                seq=st.next_seq,
                start=w.start,
                end=end,
                reason=reason,
                chunks=w.chunks,
                n=w.n,
                signals=signals,
                latencies=latencies,
            )
        )
        st.next_seq += 1

    def close_idle(self, scope: str) -> None:
        st = self.scope_state(scope)
        now = self._wall()
        idle = [
            w
            for w in sorted(st.open, key=lambda w: w.start)
            if now - w.touched >= self.cfg.idle_close_s
        ]
        for w in idle:
            self._close(scope, st, w, "idle", {})
        if idle:
            self._save(scope, st)

    def close_all(self, scope: str) -> None:
        st = self.scope_state(scope)
        for w in sorted(st.open, key=lambda w: w.start):
            self._close(scope, st, w, "end", {})
        self._save(scope, st)

    def open_events(self, scope: str) -> int:
        return sum(w.n for w in self.scope_state(scope).open)

    # -- analysis and publication ----------------------------------------------------------------

    def due(self, scope: str, *, ignore_wait: bool = False) -> list[tuple[int, int]]:
        """(seq, attempt) of windows to analyse now: closed, no result yet, past their retry time.

        Only references: the suspects are loaded by `window`, once, by whoever runs the analysis.
        """
        st = self.scope_state(scope)
        now = self._wall()
        return [
            (p.seq, p.attempt)
            for p in st.pending
            if p.result is None and not p.given_up and (ignore_wait or p.not_before <= now)
        ]

    def window(self, scope: str, seq: int) -> ClosedWindow:
        """A pending window with its suspects, for analysis."""
        p = next(p for p in self.scope_state(scope).pending if p.seq == seq)
        return self._window(scope, p)

    def pending(self, scope: str) -> int:
        return len(self.scope_state(scope).pending)

    def _window(self, scope: str, p: _Pending) -> ClosedWindow:
        suspects: list[Suspect] = []
        for key in p.chunks:
            raw = self.store.get(key)
            if raw:
                suspects += self._cache.get(raw)
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
        signals = None if p.signals is None else [Signal(**x) for x in p.signals]  # type: ignore[arg-type]
        return ClosedWindow(
            scope, p.start, p.end, suspects, p.reason, p.seq, p.attempt, redactions, signals
        )

    def publish(self, scope: str) -> Published:
        """Publish the finished analyses at the head of the queue, in sequence order, and
        resolve the alerts no window has raised for `resolve_after_s`."""
        st = self.scope_state(scope)
        out = Published()
        while st.pending and (st.pending[0].result is not None or st.pending[0].given_up):
            p = st.pending.pop(0)
            window = self._window(scope, p)
            if p.result is None:  # given up after repeated failures
                raw = _SUSPECTS.dump_json(window.suspects)
                out.dead.append(DeadLetter.of(raw, self._topic, None, None, p.reason))
                self._drop_chunks(p.chunks)
                self.counters.windows_given_up += 1
                continue
            analysis = Analysis.model_validate_json(p.result)
            if p.latencies:  # measured, not the analyst's: the report's graph gains latencies
                report = analysis.report.model_copy(update={"latencies": p.latencies})
                analysis = analysis.model_copy(update={"report": report})
            now = p.end if self.cfg.alert_time == "event" else (p.done_at or p.end)
            self.counters.windows_analysed[analysis.provenance.analysis] += 1
            degraded = analysis.provenance.analysis == "degraded"
            if not (degraded and p.attempt > 0):  # a retry degraded again says nothing new
                out.alerts += self._alerts(st, scope, analysis, now)
            # An LLM that answered (invalid output, a refused request) would answer the same
            # again: only an LLM that could not be had is asked again.
            down = analysis.provenance.error_category in LLM_DOWN
            if degraded and down and p.attempt < self.cfg.degraded_retries:
                self._retry_later(st, p)  # its feedback waits for a real answer
            else:
                feedback, outcomes = _labels(window, analysis, now, self.cfg.audit_rate)
                out.feedback += feedback
                out.outcomes += outcomes
                out.windows += 1
                self._drop_chunks(p.chunks)
        out.alerts += self._resolve_quiet(st)  # after the revisions that keep alerts firing
        out.alerts += self._remark(st)
        self.counters.alerts.update(a.report.severity for a in out.alerts)
        self._save(scope, st)
        return out

    def _retry_later(self, st: ScopeState, p: _Pending) -> None:
        """Queue a degraded window again, or fold it into the retry already queued in its scope.

        A folded retry takes a new sequence number, so an analysis of it already under way (for
        the windows it held before) no longer matches it and is dropped when it reports."""
        queued = next(
            (q for q in st.pending if q.attempt > 0 and q.result is None and not q.given_up), None
        )
        if queued is None:
            retry = p.model_copy(
                update={
                    "attempt": p.attempt + 1,
                    "result": None,
                    "done_at": None,
                    "not_before": self._wall() + self._retry_delay(p.attempt),
                }
            )
        else:
            st.pending.remove(queued)
            retry = queued.model_copy(
                update={
                    "start": min(queued.start, p.start),
                    "end": max(queued.end, p.end),
                    "chunks": queued.chunks + p.chunks,
                    "n": queued.n + p.n,
                    "signals": None
                    if queued.signals is None and p.signals is None
                    else (queued.signals or []) + (p.signals or []),
                    "latencies": queued.latencies + p.latencies,
                }
            )
        retry.seq, st.next_seq = st.next_seq, st.next_seq + 1
        st.pending.append(retry)

    def _retry_delay(self, attempt: int) -> float:
        """retry_after_s, doubled per attempt up to retry_max_s: an outage of unknown length is
        covered by few calls, and a short one costs one short wait."""
        return float(min(self.cfg.retry_max_s, self.cfg.retry_after_s * 2 ** min(attempt, 30)))

    def _drop_chunks(self, chunks: Iterable[str]) -> None:
        for key in chunks:
            raw = self.store.get(key)
            if raw:
                self._cache.drop(raw)
            self.store.delete(key)

    def _alerts(self, st: ScopeState, scope: str, analysis: Analysis, now: datetime) -> list[Alert]:
        """New or revised alerts; an `info` window resolves what was firing in the scope."""

        report = analysis.report
        if report.severity == "info":
            return self._resolve(st, list(st.firing), now)
        fp = report.fingerprint()
        if fp not in st.firing:
            st.firing_since[fp] = self._wall()
        alert = Alert(
            fingerprint=fp,
            revision=self._next_revision(st, fp),
            status="firing",
            report=report,
            provenance=analysis.provenance,
            evidence=analysis.templates,
            generated_at=now,
        )
        alert = self._marked(st, alert)
        st.firing[fp] = alert.model_dump_json()
        st.firing_at[fp] = self._wall()
        return [alert]

    @staticmethod
    def _next_revision(st: ScopeState, fp: str) -> int:
        n = st.revisions[fp] = st.revisions.pop(fp, 0) + 1  # most recent last
        stale = [k for k in st.revisions if k not in st.firing and k != fp]
        for k in stale[: max(0, len(st.revisions) - _MAX_REVISIONS_PER_SCOPE)]:
            del st.revisions[k]  # the least recently revised, never a firing alert
        return n

    def _resolve(self, st: ScopeState, fingerprints: list[str], now: datetime) -> list[Alert]:
        """Resolved revisions of firing alerts, which stop firing."""
        resolved = []
        for fp in fingerprints:
            update = {"status": "resolved", "generated_at": now,
                      "revision": self._next_revision(st, fp)}  # fmt: skip
            resolved.append(Alert.model_validate_json(st.firing.pop(fp)).model_copy(update=update))
            st.firing_at.pop(fp, None)
            st.firing_since.pop(fp, None)
        return resolved

    def _resolve_quiet(self, st: ScopeState) -> list[Alert]:
        """Resolve the alerts no window has raised for `resolve_after_s` (a scope that went
        quiet sends no `info` window to resolve them)."""
        wall = self._wall()
        for fp in st.firing:
            st.firing_at.setdefault(fp, wall)  # state from before the quiet period was kept
        quiet = [fp for fp in st.firing if wall - st.firing_at[fp] >= self.cfg.resolve_after_s]
        return self._resolve(st, quiet, datetime.fromtimestamp(wall, UTC))

    def _marked(self, st: ScopeState, a: Alert) -> Alert:
        """The alert with what people said about it: its episode's ack, a silence over it."""
        if self._controls is None:
            return a
        wall = self._wall()
        since = datetime.fromtimestamp(st.firing_since.get(a.fingerprint, wall), UTC)
        silence = self._controls.silence(a, datetime.fromtimestamp(wall, UTC))
        update = {
            "acknowledged": self._controls.acknowledgement(a.fingerprint, since),
            "silenced_until": silence.until if silence else None,
        }
        return a.model_copy(update=update)

    def _remark(self, st: ScopeState) -> list[Alert]:
        """A new revision of each firing alert that was acknowledged, silenced or unsilenced
        since it was published: every sink and view hears of it. (Not a raise: the quiet
        period still counts from the last window that raised it.)"""
        out = []
        for fp, raw in st.firing.items():
            a = Alert.model_validate_json(raw)
            m = self._marked(st, a)
            if (m.acknowledged, m.silenced_until) == (a.acknowledged, a.silenced_until):
                continue
            now = datetime.fromtimestamp(self._wall(), UTC)
            m = m.model_copy(update={"revision": self._next_revision(st, fp), "generated_at": now})
            st.firing[fp] = m.model_dump_json()
            out.append(m)
        return out


def _labels(
    w: ClosedWindow, analysis: Analysis, now: datetime, audit_rate: float
) -> tuple[list[Feedback], list[Outcome]]:
    """What a window's final analysis teaches: per template a label, per filter version counts.

    Feedback: one record per template with a verdict. Its weight is the events it stands for in
    this window: each flagged event counts 1, each audit sample 1/p with its own p (it represents
    the unflagged events it was drawn from; a first sighting drawn with p = 1 only itself).
    Source `audit` when every event of the template was an audit sample
    (a template the filter missed), `llm` otherwise, `heuristic` when no LLM answered.
    Outcomes: per filter version, events by (flagged | audited) x (relevant | not), for the recall
    estimate; and the window's signals with what the analysis made of them (named the service,
    as the root cause), for thresholds learned later.
    """
    templates = normalize_batch([s.event.message for s in w.suspects])
    verdict = {
        analysis.templates[v.template_id]: v.relevant
        for v in analysis.verdicts
        if v.template_id in analysis.templates
    }
    kind = analysis.provenance.analysis
    first: dict[str, Suspect] = {}
    weight: dict[str, float] = {}
    all_audit: dict[str, bool] = {}
    # version -> flagged +/-, audited +/-, unlabelled, census +, raised +, raised -
    counts: dict[str, list[int]] = {}
    raised_weight: dict[str, float] = {}
    rates: dict[str, float] = {}
    for s, t in zip(w.suspects, templates, strict=True):
        first.setdefault(t, s)
        p = s.sampling_probability if s.audit and s.sampling_probability > 0 else 1.0
        weight[t] = weight.get(t, 0.0) + 1.0 / p
        all_audit[t] = all_audit.get(t, True) and s.audit
        c = counts.setdefault(s.model_version, [0] * 8)
        y = verdict.get(t)
        c[4 if y is None else 2 * s.audit + (not y)] += 1
        if not s.audit or y is None:
            continue
        if s.reason == "first_sight" or p >= 1.0:  # drawn with more than the audit rate
            if p >= 1.0:
                c[5] += y
            elif y:
                c[6] += 1
                raised_weight[s.model_version] = raised_weight.get(s.model_version, 0.0) + 1 / p
            else:
                c[7] += 1
        else:
            rates[s.model_version] = s.sampling_probability
    feedback = []
    for t, y in verdict.items():
        if t not in first:
            continue
        s = first[t]
        source = ("audit" if all_audit[t] else "llm") if kind == "llm" else "heuristic"
        feedback.append(
            Feedback(
                template=t,
                text=s.event.message[:2000],
                label=y,
                source=source,
                weight=weight[t],
                model_version=s.model_version,
                score=s.score,
                scope=w.scope,
                at=now,
            )
        )
    report = analysis.report
    named = {a.service for a in report.affected_services} | {c.service for c in report.root_causes}
    roots = {c.service for c in report.root_causes}
    verdicts = [
        SignalVerdict(
            kind=x.kind,
            service=x.service,
            strength=x.strength,
            caller=x.caller,
            named=x.service in named,
            root_cause=x.service in roots,
        )
        for x in w.signals or ()
    ]
    outcomes = [
        Outcome(
            scope=w.scope,
            window_end=w.end,
            model_version=version,
            audit_rate=rates.get(version, audit_rate),
            analysis=kind,
            flagged_positive=c[0],
            flagged_negative=c[1],
            audited_positive=c[2],
            audited_negative=c[3],
            census_positive=c[5],
            raised_positive=c[6],
            raised_weight=raised_weight.get(version, 0.0),
            raised_negative=c[7],
            unlabelled=c[4],
            at=now,
            signals=verdicts,
        )
        for version, c in sorted(counts.items())
    ]
    return feedback, outcomes
