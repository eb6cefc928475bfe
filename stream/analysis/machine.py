"""The analysis stage as one state machine over a key-value store, for the worker and `scan`.

`AnalysisState.apply(partition, offset, value)` takes one record of the suspects topic, as its
bytes, and returns its `Effects`: suspect batches and signal counts from the filter stage, `Tick`s
(idle windows close, retries come due, quiet alerts resolve) and `Analysed` results of analyses
that ran outside the stream. The Faust agent (`analysis.app`) and `scan` both call it, so they
cannot differ in what a record does. Its parts: `windows` (suspects -> closed windows),
`alerts` (the alert lifecycle), `labels` (feedback and outcomes), `state` (what is stored, and
its versions), `store` (where).

Closed windows get a sequence number and wait in `pending`. Their analyses may run concurrently
and finish in any order; results are published strictly in sequence, so revisions and
resolutions come out as if analysed one by one (and as `scan` does). A degraded result (LLM down)
is published once, and its window queued again (`degraded_retries`): while the LLM stays down, a
retry that degrades again publishes nothing, and the windows of a scope that degrade join the one
retry already queued there, so when the LLM answers, one analysis over all of them is the next
revision (not one per window, nor one per retry). An analysis that raised is retried, and
dead-lettered after `max_analysis_failures`.

Keys of the store: `scope/<scope>` (a ScopeState), `chunk/<scope>/<n>` (suspects of a window),
`signals/<scope>` (the signal detector), `part/<p>` (the scopes of a suspects partition and the
last offset applied, so a record replayed after a crash is not applied twice).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import TypeAdapter

from sluice.models.analyst import LLM_DOWN, Analysis
from sluice.stream.analysis.alerts import AlertBook
from sluice.stream.analysis.effects import AnalysisCounters, Effects, Published
from sluice.stream.analysis.labels import labels
from sluice.stream.analysis.state import (
    PartitionState,
    PendingWindow,
    ScopeState,
    dump_state,
    load_partition,
    load_scope,
)
from sluice.stream.analysis.store import ChunkCache, StateStore
from sluice.stream.analysis.triage import NewTemplates
from sluice.stream.analysis.windows import ClosedWindow, Windows
from sluice.stream.delivery.controls import Controls
from sluice.stream.errors import RecordError, RecordKindError, StateError
from sluice.stream.records import (
    Analysed,
    DeadLetter,
    SignalCounts,
    Suspect,
    SuspectBatch,
    Tick,
    parse_suspects_record,
    read_record,
)
from sluice.stream.settings import PipelineSettings
from sluice.stream.signals.codec import dump_detector
from sluice.stream.signals.detector import SignalDetector

__all__ = ["AnalysisState"]

_SUSPECTS: TypeAdapter[list[Suspect]] = TypeAdapter(list[Suspect])


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
        triage: NewTemplates | None = None,
        counters: AnalysisCounters | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self._cache = cache if cache is not None else ChunkCache()
        self._wall = wall
        self._topic = suspects_topic
        self._triage = triage
        self.counters = counters if counters is not None else AnalysisCounters()
        self._windows = Windows(cfg, store, self._cache, wall, self._detector, self.counters)
        self._alerts = AlertBook(wall, cfg.resolve_after_s, controls)
        #: scope key -> the bytes this instance last saved there, and the state they hold
        self._saved: dict[str, tuple[bytes, ScopeState]] = {}

    # -- the one entry point ---------------------------------------------------------------------

    def apply(self, partition: int, offset: int | None, value: bytes) -> Effects:
        """Apply one record of the suspects topic (`offset` None: not from Kafka, `scan`).

        Raises `StateError` when stored state cannot be read (`StateVersionError`: a newer
        release wrote it); nothing is then committed, and the caller dead-letters the record."""
        try:
            return self._apply(partition, offset, value)
        except BaseException:
            self._saved.clear()  # a state changed half-way is not the one its bytes hold
            raise

    def _apply(self, partition: int, offset: int | None, value: bytes) -> Effects:
        out = Effects()
        if offset is not None and self.applied(partition, offset):
            out.replayed = True  # its effects are in the restored state
            return out
        scopes: list[str] = []
        try:
            rec = parse_suspects_record(value)
        except RecordKindError:
            pass  # a newer release's kind of record: skipped and counted (`stream.wire`)
        except RecordError as exc:  # a newer major version too (RecordVersionError)
            out.dead.append(DeadLetter.of(value, self._topic, partition, offset, str(exc)))
        else:
            out.record = rec
            if isinstance(rec, SuspectBatch):
                out.dead += self.on_suspects(partition, offset, rec)
                scopes = [rec.scope]
                if self._triage is not None:
                    self._triage.offer(rec)
            elif isinstance(rec, SignalCounts):
                out.dead += self.on_counts(partition, offset, rec)
            elif isinstance(rec, Tick):
                scopes = self.on_tick(partition)
            else:
                self.on_analysed(rec)
                scopes = [rec.scope]
            for scope in scopes:
                out.extend(self.publish(scope))
        if offset is not None:
            self.mark_applied(partition, offset)
        out.due = [(scope, seq, attempt) for scope in scopes for seq, attempt in self.due(scope)]
        return out

    def scope_state(self, scope: str) -> ScopeState:
        """The scope's state: parsed from the store, or the object this instance last saved
        there while the store still holds those very bytes (a suspects record reads its scope
        three times: parsing it each time was a third of the analysis stage). Every method
        that changes a state saves it; none changes one it does not save."""
        key = f"scope/{scope}"
        raw = self.store.get(key)
        saved = self._saved.get(key)
        if saved is not None and raw is saved[0]:
            return saved[1]
        return load_scope(key, raw)

    def _save(self, scope: str, st: ScopeState) -> None:
        key = f"scope/{scope}"
        raw = dump_state(st)
        self.store.put(key, raw)
        if len(self._saved) >= 256:  # `scan` keeps one instance for a whole file
            self._saved.clear()
        self._saved[key] = (raw, st)

    def _partition(self, p: int) -> PartitionState:
        key = f"part/{p}"
        return load_partition(key, self.store.get(key))

    def _save_partition(self, p: int, part: PartitionState) -> None:
        self.store.put(f"part/{p}", dump_state(part))

    def scopes(self, partition: int) -> list[str]:
        return list(self._partition(partition).scopes)

    def applied(self, partition: int, offset: int) -> bool:
        """Whether the record at offset was applied already (a replay after a crash)."""
        return offset <= self._partition(partition).applied

    def last_applied(self, partition: int) -> int:
        """The offset of the partition's last record applied; -1 when none was."""
        return self._partition(partition).applied

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
        st = self.scope_state(rec.scope)
        detector = self._cache.detector(key, self.store.get(key), self.cfg.signals, take=True)
        # the buckets of a window still open stay out of the baseline until it closes
        hold = min((w.start.timestamp() for w in st.open), default=None)
        detector.add_counts(rec, hold)
        raw = dump_detector(detector)
        self.store.put(key, raw)
        self._cache.keep_detector(raw, detector)
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
        key = f"signals/{scope}"
        return self._cache.detector(key, self.store.get(key), self.cfg.signals)

    def on_tick(self, partition: int) -> list[str]:
        """Close idle windows and forget scopes with nothing left to do; the scopes to publish.

        A scope whose state this release cannot read (`StateError`) is passed over and kept:
        its own records are refused with a dead letter, the partition's other scopes go on."""
        part = self._partition(partition)
        now = self._wall()
        kept, unreadable = [], []
        for scope in part.scopes:
            try:
                self.close_idle(scope)
                st = self.scope_state(scope)
            except StateError:
                kept.append(scope)
                unreadable.append(scope)
                continue
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
        return [scope for scope in kept if scope not in unreadable]

    def on_analysed(self, rec: Analysed) -> None:
        """Record a finished analysis (the first result for an attempt wins)."""
        st = self.scope_state(rec.scope)
        p = next((p for p in st.pending if p.seq == rec.seq and p.attempt == rec.attempt), None)
        if p is None or p.result is not None or p.given_up:
            return  # a duplicate, or a window already published
        if rec.analysis is not None:
            p.result, p.done_at = read_record(Analysis, rec.analysis), rec.done_at
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
                # `publish` dead-letters it in its turn
                p.given_up = f"analysis failed {p.failures} times: {rec.error}"
        self._save(rec.scope, st)

    # -- windows ---------------------------------------------------------------------------------

    def add(self, scope: str, suspects: Sequence[Suspect]) -> None:
        """Suspects into their scope's windows (admitted already: `on_suspects` admits)."""
        st = self.scope_state(scope)
        self._windows.add(scope, st, suspects)
        self._save(scope, st)

    def close_idle(self, scope: str) -> None:
        st = self.scope_state(scope)
        if self._windows.close_idle(scope, st):
            self._save(scope, st)

    def close_all(self, scope: str) -> None:
        """End of input (`scan`): every open window of the scope closes."""
        st = self.scope_state(scope)
        self._windows.close_all(scope, st)
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
        return self._windows.window(scope, p)

    def pending(self, scope: str) -> int:
        return len(self.scope_state(scope).pending)

    def publish(self, scope: str) -> Published:
        """Publish the finished analyses at the head of the queue, in sequence order, and
        resolve the alerts no window has raised for `resolve_after_s`."""
        st = self.scope_state(scope)
        out = Published()
        while st.pending and (st.pending[0].result is not None or st.pending[0].given_up):
            p = st.pending.pop(0)
            window = self._windows.window(scope, p)
            if p.result is None:  # given up after repeated failures
                raw = _SUSPECTS.dump_json(window.suspects)  # the suspects, as they came
                out.dead.append(DeadLetter.of(raw, self._topic, None, None, p.given_up or ""))
                self._windows.drop(p.chunks)
                self.counters.windows_given_up += 1
                continue
            analysis = p.result
            if p.latencies:  # measured, not the analyst's: the report's graph gains latencies
                report = analysis.report.model_copy(update={"latencies": p.latencies})
                analysis = analysis.model_copy(update={"report": report})
            now = p.end if self.cfg.alert_time == "event" else (p.done_at or p.end)
            self.counters.windows_analysed[analysis.provenance.analysis] += 1
            degraded = analysis.provenance.analysis == "degraded"
            if not (degraded and p.attempt > 0):  # a retry degraded again says nothing new
                out.alerts += self._alerts.raised(st, analysis, now)
            # An LLM that answered (invalid output, a refused request) would answer the same
            # again: only an LLM that could not be had is asked again.
            down = analysis.provenance.error_category in LLM_DOWN
            if degraded and down and p.attempt < self.cfg.degraded_retries:
                self._retry_later(st, p)  # its feedback waits for a real answer
            else:
                feedback, outcomes = labels(window, analysis, now, self.cfg.audit_rate)
                out.feedback += feedback
                out.outcomes += outcomes
                out.windows += 1
                self._windows.drop(p.chunks)
        out.alerts += self._alerts.resolve_quiet(st)  # after the revisions that keep alerts firing
        out.alerts += self._alerts.remark(st)
        self.counters.alerts.update(a.report.severity for a in out.alerts)
        self._save(scope, st)
        return out

    def _retry_later(self, st: ScopeState, p: PendingWindow) -> None:
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
