"""The learning loop on a system the filter has never seen: recall per round, and its estimate.

    python -m bench.loop [--rounds 6] [--audit-rate 0.02] [--systems hdfs,bgl,nezha]

Leave one system out: for each target system (HDFS, BGL, Nezha Train-Ticket), train a starting
model *without* it (the shipped recipe, `models.training.train_default`, on every other source, its
held-out threshold chosen among those other systems as the shipped model's is), then stream
the target's real lines in rounds through the real pipeline code (`sluice.stream.scan`: the filter
stage's `screen_batch` with first sight and the verdict cache, and the analysis stage's
`AnalysisState`, with feedback and outcomes as the worker publishes them), and after each round
retrain with the real retrainer (`sluice.stream.learning.retrain.retrain`: time-ordered
held-out labels,
challenger published only if it wins). The verdict cache and the first-sight counts carry over from
round to round, as a worker keeps them; each round gets ten minutes of a worker's first-sight
budget. The same loop without them (the model and the plain audit alone) runs beside it for
comparison. Each round is ten minutes of stream: its lines get event times spread evenly over them
(in their order), so 60-second windows close, are analysed and their verdicts apply within the
round, as in a worker (the lines' own times are not parsed from plain text yet).

The analyst is a test double, `OracleAnalyst`: its per-template verdicts come from the
ground-truth labels, not from an LLM. It sees what an LLM would see (the bundle compressed into
the same token budget; templates that do not fit get no verdict) and its prompt tokens are
counted as if the prompt were sent (the instructions plus the fenced data, cl100k tokens).
Labels: BGL lines carry their own (alert category or not). Nezha: ERROR or FATAL level (a weak
label: the level the service gave the line). HDFS labels blocks; a line's label is
whether its template is in the greedy cover of anomalous blocks over the whole target data
(`datasets.template_cover`: the templates that reveal anomalous blocks), which is what a perfect
analyst would call relevant. HDFS block recall (a block is caught when the filter flags one of
its lines) is reported beside the line recall.

Per round, on that round's events: recall of what reached the LLM (relevant lines forwarded for any
reason: the model, a verdict, first sight, the audit), and of the filter alone (the model active
during the round), block recall (HDFS, the filter alone), the filter's forward ratio and the share
of events that reached the LLM, LLM prompt tokens per 1M events (incident analysis and triage
together, triage apart, and triage tokens per new template), and the audit-based recall estimate
with its 95% interval beside the truth it estimates: the recall of the model's flags and the
verdicts together (what decides forwarding), where first sightings count as misses drawn with their
own probability. Targets: recall of what reached the LLM >= 0.95 in round 1; the filter alone >=
0.95 by round 3 with a forward ratio <= 2x the true anomaly ratio; the interval covers the truth in
every round. Results: table, bench/results/loop.json and bench/results/loop.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from sluice.models.analyst import (
    SYSTEM_PROMPT,
    Analysis,
    Bundle,
    IncidentReport,
    Provenance,
    TemplateVerdict,
    Triaged,
    TriageItem,
    TriageVerdict,
    compress,
    render_triage,
    token_counter,
)
from sluice.models.filter import (
    Example,
    FeatureSpec,
    FilterModel,
    OnnxFilter,
    normalize_batch,
)
from sluice.models.training.train_default import Recipe, System, load_systems, recipe_examples
from sluice.stream import PipelineSettings, RetrainSettings
from sluice.stream.filtering.verdicts import FirstSight, VerdictCache
from sluice.stream.learning.recall import estimate_recall
from sluice.stream.learning.retrain import retrain
from sluice.stream.records import Feedback
from sluice.stream.scan import scan

RESULTS = Path(__file__).resolve().parent / "results"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: A round is this much of the stream: its lines get event times spread evenly over it, in
#: order, so windows close and their verdicts apply within the round as in a worker.
ROUND_MINUTES = 10


class OracleAnalyst:
    """Verdicts from ground truth, on the templates an LLM would see; tokens counted as sent."""

    name = "oracle"

    def __init__(self, relevant: Callable[[str], bool], budget: int = 6000) -> None:
        self._relevant = relevant
        self._budget = budget
        self._instructions = token_counter().count(SYSTEM_PROMPT)
        self.prompt_tokens = 0
        self.calls = 0
        self.triage_tokens = 0
        self.triage_templates = 0

    async def triage(self, items: Sequence[TriageItem]) -> Triaged:
        """New templates judged from ground truth; the compact prompt's tokens counted as sent."""
        system, user, ids = render_triage(items)
        tokens = token_counter().count(system) + token_counter().count(user)
        self.triage_tokens += tokens
        self.triage_templates += len(items)
        verdicts = {
            it.template: TriageVerdict(id=n, relevant=self._relevant(it.template), reason="truth")
            for n, it in zip(ids, items, strict=True)
        }
        return Triaged(verdicts, tokens)

    async def analyze(self, bundle: Bundle) -> Analysis:
        digest = compress(bundle, self._budget, 3)
        verdicts = [
            TemplateVerdict(template_id=g.id, relevant=self._relevant(g.template))
            for g in digest.included
        ]
        tokens = digest.prompt_tokens + self._instructions
        self.prompt_tokens += tokens
        self.calls += 1
        hit = any(v.relevant for v in verdicts)
        report = IncidentReport(
            scope=bundle.scope, is_incident=hit, severity="warning" if hit else "info",
            title="oracle", summary="ground truth", first_seen=None, last_seen=None,
            affected_services=[], service_graph=[], root_causes=[], recommendations=[],
        )  # fmt: skip
        return Analysis(
            report=report,
            verdicts=verdicts,
            provenance=Provenance(
                analysis="llm",
                filter_version=bundle.filter_version,
                llm_model="oracle (ground-truth labels)",
                prompt_tokens=tokens,
                templates_in_prompt=len(digest.included),
                templates_truncated=digest.truncated,
            ),
            templates={g.id: g.template for g in digest.groups},
        )


@dataclass
class Target:
    name: str
    texts: list[str]
    positive: np.ndarray  # per line, the oracle's label
    blocks: list[str] | None  # HDFS: block id per line
    block_anomalous: dict[str, bool] | None
    base: list[Example]  # the starting model's training data (the other systems)
    others: list[System]


#: The shipped recipe (models.training.train_default), held-out threshold included.
RECIPE = Recipe(FeatureSpec(subwords=4, severity=1, max_features=1024))
_NAMES = {"hdfs": "HDFS", "bgl": "BGL", "nezha": "Nezha"}


def load_target(name: str) -> Target:
    """The target's lines and labels, and the shipped recipe's training data without it."""
    systems = load_systems()
    target = next(s for s in systems if s.name == _NAMES[name])
    others = [s for s in systems if s is not target]
    return Target(
        name,
        target.texts,
        target.labels == 1,
        target.blocks,
        target.block_anomalous,
        recipe_examples(others, RECIPE.cap),
        others,
    )


@dataclass
class Round:
    round: int
    model: str
    events: int
    true_positive_ratio: float
    llm_recall: float
    recall: float
    llm_block_recall: float | None
    block_recall: float | None
    forward_ratio: float
    llm_share: float
    first_sight: int
    by_verdict: int
    verdicts: int
    decided_recall: float
    prompt_tokens_per_1m_events: float  # incident analysis and triage together
    triage_tokens_per_1m_events: float
    triage_tokens_per_template: float | None
    estimate: float | None
    estimate_low: float | None
    estimate_high: float | None
    covered: bool | None
    audited: int
    retrain: str
    seconds: float


def _rounds(target: Target, rounds: int) -> list[np.ndarray]:
    """Line indices per round, in stream order. HDFS: whole blocks per round (a block belongs to
    the round of its first line), so that a block's recall is decided within one round."""
    n = len(target.texts)
    if target.blocks is None:
        return np.array_split(np.arange(n), rounds)
    first: dict[str, int] = {}
    for i, b in enumerate(target.blocks):
        first.setdefault(b, i)
    cut = np.linspace(0, n, rounds + 1)
    of_line = np.searchsorted(cut, [first[b] for b in target.blocks], side="right") - 1
    return [np.flatnonzero(of_line == r) for r in range(rounds)]


def run_target(
    target: Target, rounds: int, audit_rate: float, seed: int = 0, first_sight: bool = True
) -> list[Round]:
    t0 = time.perf_counter()
    model = RECIPE.fit(target.others, created_by="bench.loop (leave-one-out)")
    print(f"[{target.name}] starting model {model.version} trained without {target.name} "
          f"in {time.perf_counter() - t0:.1f}s")  # fmt: skip
    templates = normalize_batch(target.texts)
    relevant_templates = {t for t, y in zip(templates, target.positive.tolist(), strict=True) if y}
    # Batches of about ten seconds of the round's stream, as a worker fetches what has arrived.
    batch = max(50, len(target.texts) // rounds // (ROUND_MINUTES * 6))
    cfg = PipelineSettings(audit_rate=audit_rate, batch_size=batch)
    fs = cfg.first_sight.model_copy(update={"enabled": first_sight, "verdicts": first_sight})
    cfg = cfg.model_copy(update={"first_sight": fs})
    # What a worker keeps between rounds: the verdicts it follows and its sightings.
    verdicts = VerdictCache(fs.max_verdicts) if first_sight else None
    # A worker's budget over a round's ten minutes, available from the round's start (the clock
    # of this bench stands still within a round, so the bucket holds the round's whole budget).
    round_budget = fs.model_copy(update={"budget_per_min": fs.budget_per_min * ROUND_MINUTES})
    minutes = [0.0]
    first = FirstSight(round_budget, clock=lambda: minutes[0] * 60) if first_sight else None
    # The feedback topic as a retrain sees it: compaction only touches closed segments (7 days
    # by default), so every record of the recent rounds is there.
    feedback: list[Feedback] = []
    clock = [T0]

    def now() -> datetime:
        clock[0] += timedelta(seconds=1)
        return clock[0]

    out: list[Round] = []
    for r, idx in enumerate(_rounds(target, rounds)):
        started = time.perf_counter()
        texts = [target.texts[i] for i in idx]
        oracle = OracleAnalyst(relevant_templates.__contains__)
        filt = OnnxFilter(model)
        records = _stream(target, idx, T0 + timedelta(minutes=ROUND_MINUTES * r))
        minutes[0] += 1  # a minute of this clock refills the whole round's budget
        result = asyncio.run(
            scan(records, cfg, filt, oracle, now, wall=lambda: 0.0, verdicts=verdicts, first=first)
        )
        flagged = model.score(texts) >= model.threshold
        y = target.positive[idx]
        recall = float((flagged & y).sum() / max(1, int(y.sum())))
        reached = np.zeros(len(idx), dtype=bool)
        decided = np.zeros(len(idx), dtype=bool)  # forwarded for sure: by the model or a verdict
        position = {int(i): j for j, i in enumerate(idx)}
        for src, why in result.forwarded:
            j = position[int(src.rsplit(":", 1)[1])]
            reached[j] = True
            decided[j] = why in ("model", "verdict")
        llm_recall = float((reached & y).sum() / max(1, int(y.sum())))
        decided_recall = float((decided & y).sum() / max(1, int(y.sum())))
        block_recall = llm_block_recall = None
        if target.blocks is not None and target.block_anomalous is not None:
            blocks = [target.blocks[i] for i in idx]
            anomalous = {b for b in blocks if target.block_anomalous[b]}

            def caught(
                mask: np.ndarray, _blocks: list[str] = blocks, _a: set[str] = anomalous
            ) -> float:
                hit = {b for b, f in zip(_blocks, mask.tolist(), strict=True) if f and b in _a}
                return len(hit) / max(1, len(_a))

            block_recall, llm_block_recall = caught(flagged), caught(reached)
        est = estimate_recall(result.outcomes).get(model.version)
        covered = None
        if est is not None and est.low is not None and est.high is not None:
            covered = est.low <= decided_recall <= est.high
        feedback += result.feedback
        res = retrain(model, feedback, RetrainSettings(), base=target.base, seed=seed)
        if res.challenger is not None and res.comparison is not None and res.comparison.accepted:
            result_text = f"published {res.challenger.version}: {res.reason}"
            next_model: FilterModel = res.challenger
        else:
            result_text = f"kept: {res.reason}"
            next_model = model
        out.append(
            Round(
                round=r + 1,
                model=model.version,
                events=len(texts),
                true_positive_ratio=float(y.mean()),
                llm_recall=llm_recall,
                recall=recall,
                llm_block_recall=llm_block_recall,
                block_recall=block_recall,
                forward_ratio=float(flagged.mean()),
                llm_share=result.suspects / max(1, result.events),
                first_sight=result.counters.first_sight,
                by_verdict=result.counters.by_verdict,
                verdicts=len(verdicts) if verdicts is not None else 0,
                decided_recall=decided_recall,
                prompt_tokens_per_1m_events=(oracle.prompt_tokens + oracle.triage_tokens)
                / max(1, len(texts))
                * 1e6,
                triage_tokens_per_1m_events=oracle.triage_tokens / max(1, len(texts)) * 1e6,
                triage_tokens_per_template=oracle.triage_tokens / oracle.triage_templates
                if oracle.triage_templates
                else None,
                estimate=est.recall if est else None,
                estimate_low=est.low if est else None,
                estimate_high=est.high if est else None,
                covered=covered,
                audited=est.audited if est else 0,
                retrain=result_text,
                seconds=time.perf_counter() - started,
            )
        )
        model = next_model
    return out


def _stream(target: Target, idx: np.ndarray, start: datetime) -> list[tuple[bytes, None, str]]:
    """The round's lines as JSON events, in order, timed evenly over ROUND_MINUTES."""
    step = ROUND_MINUTES * 60.0 / max(1, len(idx))
    return [
        (
            orjson.dumps({
                "ts": (start + timedelta(seconds=j * step)).isoformat(),
                "message": target.texts[i],
            }),
            None,
            f"{target.name}:{i}",
        )
        for j, i in enumerate(idx.tolist())
    ]  # fmt: skip


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def print_table(name: str, rows: list[Round]) -> None:
    print(f"\n{name}: round  model         to LLM  filter  block(LLM/filter)  fwd     pos     "
          "LLM     first  verdict  tok/1M ev (triage)  tok/new  estimate [95% interval]  truth  "
          "covers")  # fmt: skip
    for r in rows:
        interval = f"[{_fmt(r.estimate_low)}, {_fmt(r.estimate_high)}]"
        blocks = f"{_fmt(r.llm_block_recall)}/{_fmt(r.block_recall)}"
        print(
            f"{'':5s} {r.round:5d}  {r.model:12s}  {r.llm_recall:.3f}   {r.recall:.3f}   "
            f"{blocks:17s}  {r.forward_ratio:.4f}  {r.true_positive_ratio:.4f}  "
            f"{r.llm_share:.4f}  {r.first_sight:5d}  {r.by_verdict:7d}  "
            f"{r.prompt_tokens_per_1m_events:10,.0f} ({r.triage_tokens_per_1m_events:7,.0f})  "
            f"{_fmt(r.triage_tokens_per_template, '5.0f'):>7s}  {_fmt(r.estimate)} {interval:15s}  "
            f"{r.decided_recall:.3f}  {r.covered!s:6s}"
        )
        print(f"{'':13s}retrain: {r.retrain}")


def targets_met(rows: list[Round], block: bool, baseline: list[Round]) -> dict[str, bool]:
    def rec(r: Round) -> float:
        return r.block_recall if block and r.block_recall is not None else r.recall

    def llm(r: Round) -> float:
        return r.llm_block_recall if block and r.llm_block_recall is not None else r.llm_recall

    def tokens(rs: list[Round]) -> float:
        return sum(r.prompt_tokens_per_1m_events * r.events for r in rs)

    return {
        "llm_recall_0.95_in_round_1": llm(rows[0]) >= 0.95,
        "filter_recall_0.95_by_round_3": any(rec(r) >= 0.95 for r in rows[:3]),
        "forward_ratio_le_2x_anomaly_ratio_once_0.95": any(
            rec(r) >= 0.95 and r.forward_ratio <= 2 * r.true_positive_ratio for r in rows[:3]
        ),
        "tokens_no_more_than_without_first_sight": tokens(rows) <= tokens(baseline),
        "audit_interval_covers_truth_every_round": all(r.covered is True for r in rows),
    }


def plot(results: dict[str, list[Round]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for ax, (name, rows) in zip(axes[0], results.items(), strict=True):
        x = [r.round for r in rows]
        ax.plot(x, [r.llm_recall for r in rows], "^-", label="recall of what reached the LLM")
        ax.plot(x, [r.recall for r in rows], "o-", label="recall of the filter alone")
        if rows[0].block_recall is not None:
            ax.plot(x, [r.block_recall for r in rows], "s-", label="block recall")
        est = [r.estimate if r.estimate is not None else np.nan for r in rows]
        lo = [r.estimate_low if r.estimate_low is not None else np.nan for r in rows]
        hi = [r.estimate_high if r.estimate_high is not None else np.nan for r in rows]
        ax.errorbar(x, est, yerr=[np.subtract(est, lo), np.subtract(hi, est)], fmt="x",
                    capsize=4, label="audit estimate, 95% interval")  # fmt: skip
        ax2 = ax.twinx()
        ax2.plot(x, [r.forward_ratio for r in rows], "d--", color="gray", label="forward ratio")
        ax2.plot(
            x, [r.true_positive_ratio for r in rows], ":", color="black", label="anomaly ratio"
        )
        ax2.set_ylabel("share of events")
        ax.set(title=f"{name}: unseen system, retrained each round", xlabel="round",
               ylabel="recall", ylim=(0, 1.05), xticks=x)  # fmt: skip
        ax.axhline(0.95, color="red", linewidth=0.8, linestyle=":")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument(
        "--audit-rate",
        type=float,
        default=None,
        help="default: 0.02 for HDFS (37k lines a round) and Nezha, 0.1 for BGL (333 a round)",
    )
    ap.add_argument("--systems", default="hdfs,bgl,nezha")
    args = ap.parse_args(argv)
    results: dict[str, list[Round]] = {}
    summary: dict[str, Any] = {}
    for name in args.systems.split(","):
        target = load_target(name)
        rate = args.audit_rate or {"hdfs": 0.02, "bgl": 0.1, "nezha": 0.02}[name]
        rows = run_target(target, args.rounds, rate)
        print_table(name, rows)
        baseline = run_target(target, args.rounds, rate, first_sight=False)
        print_table(f"{name} (the same loop without first sight and verdicts)", baseline)
        met = targets_met(rows, name == "hdfs", baseline)
        print(f"{'':5s} targets: {met}")
        results[name] = rows
        summary[name] = {
            "audit_rate": rate,
            "rounds": [asdict(r) for r in rows],
            "without_first_sight": [asdict(r) for r in baseline],
            "targets": met,
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "loop",
        "command": "python -m bench.loop " + " ".join(argv or []),
        "analyst": "OracleAnalyst: verdicts from ground-truth labels (a test double, not an LLM)",
        "systems": summary,
    }
    (RESULTS / "loop.json").write_text(json.dumps(payload, indent=2))
    plot(results, RESULTS / "loop.png")
    print(f"\nwritten: {RESULTS / 'loop.json'}, {RESULTS / 'loop.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
