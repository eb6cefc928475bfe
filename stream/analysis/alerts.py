"""The alert lifecycle of a scope: raised (new or revised), acknowledged, silenced, resolved.

An alert is its fingerprint's latest revision; every change is a new revision, so every sink
and view hears of it. A firing alert resolves when an `info` window says the scope is fine, or
when no window has raised it for `resolve_after_s` (a scope that went quiet says nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sluice.models.analyst import Analysis
from sluice.stream.analysis.state import ScopeState
from sluice.stream.delivery.controls import Controls
from sluice.stream.records import Alert

__all__ = ["AlertBook"]

#: Revision counters kept per scope; the state is parsed per record, so it stays small.
_MAX_REVISIONS_PER_SCOPE = 1000


class AlertBook:
    """Alerts of a scope's state, changed by analyses, by time and by people's acks."""

    def __init__(
        self, wall: Callable[[], float], resolve_after_s: float, controls: Controls | None
    ) -> None:
        self._wall = wall
        self._resolve_after_s = resolve_after_s
        self._controls = controls

    def raised(self, st: ScopeState, analysis: Analysis, now: datetime) -> list[Alert]:
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
            anomalous=[v.template_id for v in analysis.verdicts if v.relevant],
            generated_at=now,
        )
        alert = self._marked(st, alert)
        st.firing[fp] = alert
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
            resolved.append(st.firing.pop(fp).model_copy(update=update))
            st.firing_at.pop(fp, None)
            st.firing_since.pop(fp, None)
        return resolved

    def resolve_quiet(self, st: ScopeState) -> list[Alert]:
        """Resolve the alerts no window has raised for `resolve_after_s` (a scope that went
        quiet sends no `info` window to resolve them)."""
        wall = self._wall()
        for fp in st.firing:
            st.firing_at.setdefault(fp, wall)  # state from before the quiet period was kept
        quiet = [fp for fp in st.firing if wall - st.firing_at[fp] >= self._resolve_after_s]
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

    def remark(self, st: ScopeState) -> list[Alert]:
        """A new revision of each firing alert that was acknowledged, silenced or unsilenced
        since it was published: every sink and view hears of it. (Not a raise: the quiet
        period still counts from the last window that raised it.)"""
        out = []
        for fp, a in st.firing.items():
            m = self._marked(st, a)
            if (m.acknowledged, m.silenced_until) == (a.acknowledged, a.silenced_until):
                continue
            now = datetime.fromtimestamp(self._wall(), UTC)
            m = m.model_copy(update={"revision": self._next_revision(st, fp), "generated_at": now})
            st.firing[fp] = m
            out.append(m)
        return out
