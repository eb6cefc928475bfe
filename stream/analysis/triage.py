"""New templates to the LLM's triage as soon as they are forwarded, their verdicts to `feedback`.

The filter stage forwards a template's first sightings (`stream.verdicts`); a window's analysis
would judge it only once the window closes. `NewTemplates` collects the first sightings the
analysis stage receives, has them judged in compact triage calls (`models.analyst._triage`), and
turns the verdicts into `feedback` records (source `llm`, weight 1), which every worker's filter
stage applies within seconds. The windows are analysed as before: the incident analysis still
sees these templates in context, and its later verdict on a template replaces the triage's
(the same compaction key, the later record).

Triage is a shortcut, not a record's fate: a call that fails, or a verdict lost with a worker,
leaves the template to its window's analysis. Templates are taken from redacted text only
(`stream.redaction`), as everything that leaves for the LLM or `feedback` is.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sluice.models.analyst import Analyst, TriageItem, Triager
from sluice.models.filter import normalize
from sluice.stream.analysis.redaction import Redactor
from sluice.stream.records import Feedback, Suspect, SuspectBatch
from sluice.stream.settings import PipelineSettings

__all__ = ["NewTemplates", "TriageCounters"]

log = logging.getLogger(__name__)


@dataclass
class TriageCounters:
    """What triage did, for metrics and benchmarks."""

    calls: int = 0
    templates: int = 0  # sent to triage
    judged: int = 0  # came back with a verdict
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class NewTemplates:
    """First sightings waiting for triage (bounded), and the templates already sent."""

    cfg: PipelineSettings
    max_per_call: int = 40
    remember: int = 100_000
    counters: TriageCounters = field(default_factory=TriageCounters)

    def __post_init__(self) -> None:
        self._pending: OrderedDict[str, tuple[str, Suspect]] = OrderedDict()
        self._sent: OrderedDict[str, None] = OrderedDict()
        self._redact = Redactor(self.cfg.redact_patterns) if self.cfg.redact else None

    def __len__(self) -> int:
        return len(self._pending)

    def offer(self, batch: SuspectBatch) -> None:
        """Take note of a batch's first sightings whose template has not been sent yet."""
        for s in batch.suspects:
            if s.reason != "first_sight":
                continue
            text = self._redact(s.event.message) if self._redact else s.event.message
            template = normalize(text)
            if template in self._sent or template in self._pending:
                continue
            self._pending[template] = (text, s)
            while len(self._pending) > self.remember:  # an analyst far behind: oldest dropped
                self._pending.popitem(last=False)

    async def judge(self, analyst: Analyst, now: Callable[[], datetime]) -> list[Feedback]:
        """Send what is pending to the analyst's triage (one call per `max_per_call`); returns
        the verdicts as feedback records. An analyst without triage judges nothing here."""
        if not self._pending or not isinstance(analyst, Triager):
            return []
        out: list[Feedback] = []
        while self._pending:
            n = min(len(self._pending), self.max_per_call)
            taken = [self._pending.popitem(last=False) for _ in range(n)]
            for template, _ in taken:
                self._sent[template] = None
            while len(self._sent) > self.remember:
                self._sent.popitem(last=False)
            items = [TriageItem(t, text) for t, (text, _s) in taken]
            result = await analyst.triage(items)
            c = self.counters
            c.calls += 1
            c.templates += len(items)
            c.judged += len(result.verdicts)
            c.failed_calls += result.error is not None
            c.prompt_tokens += result.prompt_tokens
            c.completion_tokens += result.completion_tokens
            at = now()
            for template, (text, s) in taken:
                v = result.verdicts.get(template)
                if v is None:
                    continue
                out.append(
                    Feedback(
                        template=template,
                        text=text[:2000],
                        label=v.relevant,
                        source="llm",
                        weight=1.0,
                        model_version=s.model_version,
                        score=s.score,
                        scope=s.scope,
                        at=at,
                    )
                )
            if result.error is not None:
                break  # the next call would fail alike: the rest wait for the next round
        return out
