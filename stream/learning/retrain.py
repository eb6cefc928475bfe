"""The retrainer: feedback -> training set -> challenger vs champion on held-out labels -> publish.

Training set. The `feedback` topic keeps the latest label per (source, template). Per template
one label survives: a person's (`human`) over the analysis's (`llm`, `audit`), the latest of a
source otherwise. The offline analyst's verdicts (`heuristic`) are left out unless asked for: it
decides from levels and alarm words, the filter's own rules, so training on them teaches the filter
nothing it does not already do and can never correct a miss. Each label weighs the events it
stands for: a flagged event 1, an audit sample 1/p (the unflagged events it represents).

Split. The feedback records are ordered by the time they were given and the newest
`holdout_fraction` is held out: a candidate trains on the older labels (plus `base_data`, the
champion's own training lines, so that it does not forget the systems the feedback does not
cover) with the filter's own `train`, and is judged with the champion on the held-out labels. Its
threshold is set for the target recall on the stream's labels, not on the base data. When it
wins, the same recipe is fitted again on every label and that model is published. Compaction of
the feedback topic only touches closed log segments (`segment.ms`, 7 days by default), so the
recent records a comparison needs are all there, and older history keeps the latest label per
source and template, which is what training needs.

Decision, on the held-out labels, each model at its own threshold: the challenger replaces the
champion when its weighted recall is not lower and its forward ratio is not higher than the
champion's by more than `forward_tolerance` (relative). A champion below the recall target is not
a forward ratio to defend: then a higher recall may cost more forwarding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np

from sluice.stream.errors import RecordError, RetrainError
from sluice.stream.kafka.topics import read_topic
from sluice.stream.records import Feedback, Outcome, read_record
from sluice.stream.settings import RetrainSettings, Settings

if TYPE_CHECKING:
    from sluice.models.filter import Example, FilterModel, ValidationMetrics

__all__ = [
    "Comparison",
    "Label",
    "RetrainError",
    "RetrainResult",
    "compare",
    "evaluate",
    "read_feedback",
    "read_outcomes",
    "retrain",
    "time_split",
    "training_labels",
    "write_report",
]

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PRIORITY = {"human": 2, "llm": 1, "audit": 1, "heuristic": 0}


@dataclass(frozen=True)
class Label:
    """One template's label in the training set."""

    template: str
    label: bool
    weight: float
    source: Literal["llm", "human", "audit", "heuristic"]
    at: datetime


def read_feedback(settings: Settings) -> list[Feedback]:
    """Every record of the feedback topic (records that are not feedback are logged, skipped)."""
    return _read(settings, settings.topics.feedback, Feedback)


def read_outcomes(settings: Settings) -> list[Outcome]:
    return _read(settings, settings.topics.outcomes, Outcome)


_R = TypeVar("_R", Feedback, Outcome)


def _read(settings: Settings, topic: str, kind: type[_R]) -> list[_R]:
    out: list[_R] = []
    for r in read_topic(settings, topic):
        if r.value is None:
            continue  # a tombstone
        try:
            out.append(read_record(kind, r.value))
        except RecordError as exc:
            log.warning("%s:%d:%d skipped: %s", topic, r.partition, r.offset, exc)
    return out


def training_labels(
    feedback: Iterable[Feedback], *, include_heuristic: bool = False
) -> list[Label]:
    """One label per template: human over llm/audit, the latest within a source, oldest first."""
    best: dict[str, Feedback] = {}
    machine_weight: dict[str, float] = {}
    for f in feedback:
        if f.source == "heuristic" and not include_heuristic:
            continue
        if f.source != "human":
            machine_weight[f.template] = max(machine_weight.get(f.template, 0.0), f.weight)
        cur = best.get(f.template)
        if cur is None or (_PRIORITY[f.source], f.at or _EPOCH) >= (
            _PRIORITY[cur.source],
            cur.at or _EPOCH,
        ):
            best[f.template] = f
    labels = [
        Label(
            template=t,
            label=f.label,
            # A person's label weighs what the analysis's label for the template weighed.
            weight=max(f.weight, machine_weight.get(t, 0.0)) if f.source == "human" else f.weight,
            source=f.source,
            at=f.at or _EPOCH,
        )
        for t, f in best.items()
    ]
    labels.sort(key=lambda x: (x.at, x.template))
    return labels


def time_split(
    feedback: Sequence[Feedback], holdout_fraction: float, *, include_heuristic: bool = False
) -> tuple[list[Label], list[Label]]:
    """(train, held out) labels from a time-ordered split of the feedback records.

    The newest `holdout_fraction` of the records is the future the older ones did not see:
    training labels come from the older records only; the held-out labels are the final labels
    (human over llm, latest wins) of the templates the newer records speak about. A template
    that recurs is in both, as in the stream.
    """
    ordered = sorted(feedback, key=lambda f: f.at or _EPOCH)
    cut = len(ordered) - round(len(ordered) * holdout_fraction)
    old, new = ordered[:cut], ordered[cut:]
    recent = {f.template for f in new if include_heuristic or f.source != "heuristic"}
    final = training_labels(ordered, include_heuristic=include_heuristic)
    return (
        training_labels(old, include_heuristic=include_heuristic),
        [x for x in final if x.template in recent],
    )


def evaluate(model: FilterModel, labels: Sequence[Label]) -> ValidationMetrics:
    """Weighted recall, precision and forward ratio of `model` at its threshold on `labels`."""
    from sluice.models.filter import weighted_metrics

    scores = model.score_templates([x.template for x in labels])
    y = np.array([x.label for x in labels], dtype=bool)
    w = np.array([x.weight for x in labels], dtype=np.float64)
    return weighted_metrics(scores, y, w, model.threshold)


@dataclass(frozen=True)
class Comparison:
    champion: ValidationMetrics
    challenger: ValidationMetrics
    accepted: bool
    reason: str

    def table(self, champion_version: str, challenger_version: str) -> str:
        rows = [
            ("", f"champion {champion_version}", f"challenger {challenger_version}"),
            *(
                (
                    name,
                    f"{getattr(self.champion, name):.4f}",
                    f"{getattr(self.challenger, name):.4f}",
                )
                for name in ("recall", "forward_ratio", "precision", "positive_ratio")
            ),
            ("held-out labels", str(self.champion.n), str(self.challenger.n)),
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join(
            "  ".join(c.ljust(wd) for c, wd in zip(r, widths, strict=True)) for r in rows
        )


def compare(
    champion: ValidationMetrics,
    challenger: ValidationMetrics,
    target_recall: float,
    forward_tolerance: float,
) -> Comparison:
    """The publication rule (see the module's docstring)."""
    eps = 1e-9
    if challenger.recall + eps < champion.recall:
        return Comparison(
            champion,
            challenger,
            False,
            f"recall would drop ({champion.recall:.4f} -> {challenger.recall:.4f})",
        )
    allowed = champion.forward_ratio * (1 + forward_tolerance) + eps
    if challenger.forward_ratio > allowed:
        if champion.recall + eps < target_recall and challenger.recall > champion.recall + eps:
            return Comparison(
                champion,
                challenger,
                True,
                f"recall {champion.recall:.4f} -> {challenger.recall:.4f} toward the "
                f"target {target_recall}; forwards more to get there",
            )
        return Comparison(
            champion,
            challenger,
            False,
            f"forward ratio {champion.forward_ratio:.4f} -> "
            f"{challenger.forward_ratio:.4f} exceeds the tolerance",
        )
    return Comparison(
        champion, challenger, True, "recall not lower, forward ratio within tolerance"
    )


@dataclass(frozen=True)
class RetrainResult:
    challenger: FilterModel | None
    comparison: Comparison | None
    labels: int
    trained_on: int
    held_out: list[Label]
    reason: str


def retrain(
    champion: FilterModel,
    feedback: Sequence[Feedback],
    cfg: RetrainSettings,
    *,
    base: Sequence[Example] = (),
    step: Callable[[str], None] = lambda _name: None,
    created_by: str = "sluice retrain",
    seed: int = 0,
) -> RetrainResult:
    """Build, train and judge a challenger; `step` is told each stage (a progress bar)."""
    from sluice.models.filter import Example, FilterError, train

    step("labels")
    include = cfg.include_heuristic
    labels = training_labels(feedback, include_heuristic=include)
    train_labels, held = time_split(feedback, cfg.holdout_fraction, include_heuristic=include)
    if len(held) < cfg.min_holdout:
        reason = f"{len(labels)} labels: {len(held)} held out, fewer than {cfg.min_holdout}"
        return RetrainResult(None, None, len(labels), 0, held, reason)
    target = cfg.target_recall or champion.meta.target_recall

    def fit(labels: Sequence[Label]) -> FilterModel:
        examples = [*base, *(Example(x.template, x.label, x.weight, x.source) for x in labels)]
        model = train(
            examples,
            target_recall=target,
            seed=seed,
            spec=champion.meta.features,
            parent_version=champion.version,
            created_by=created_by,
        )
        return _stream_threshold(model, labels, target)

    step("train")
    try:
        candidate = fit(train_labels)  # what the recipe makes of the past, judged on the future
    except FilterError as exc:
        return RetrainResult(None, None, len(labels), len(base), held, f"training: {exc}")
    step("compare")
    cmp = compare(
        evaluate(champion, held), evaluate(candidate, held), target, cfg.forward_tolerance
    )
    if not cmp.accepted:
        return RetrainResult(candidate, cmp, len(labels), len(base) + len(train_labels), held,
                             cmp.reason)  # fmt: skip
    step("refit")
    try:  # the recipe won: the published model learns from every label, the newest included
        challenger = fit(labels)
    except FilterError as exc:
        return RetrainResult(None, None, len(labels), len(base), held, f"refit: {exc}")
    return RetrainResult(challenger, cmp, len(labels), len(base) + len(labels), held, cmp.reason)


def _stream_threshold(model: FilterModel, labels: Sequence[Label], target: float) -> FilterModel:
    """The threshold for `target` recall on the stream's own labels (the training split's).

    `train` sets it on a split of everything it learned from, base data included; a base source
    with positives no line model can score (HDFS blocks whose fault shows only in counts) would
    then drag the threshold to ~0 and forward everything. The feedback is the stream the model
    serves, weighted as it occurs there, so its recall is the one to hold. The held-out labels
    still judge the result.
    """
    from sluice.models.filter import choose_threshold

    y = np.array([x.label for x in labels], dtype=bool)
    if not y.any():
        return model
    w = np.array([x.weight for x in labels], dtype=np.float64)
    scores = model.score_templates([x.template for x in labels])
    t = choose_threshold(scores, y, w, target)
    t = float(np.nextafter(np.float32(t), np.float32(0)))  # float32 scores stay at or above it
    return model.with_threshold(t, model.meta.validation)


def write_report(
    directory: Path, champion: FilterModel, challenger: FilterModel, held: Sequence[Label]
) -> Path:
    """A PNG of recall and forward ratio against the threshold, both models, held-out labels."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RetrainError("--report needs matplotlib: install sluice[report]") from exc
    y = np.array([x.label for x in held], dtype=bool)
    w = np.array([x.weight for x in held], dtype=np.float64)
    ts = np.linspace(0.0, 1.0, 201)
    fig, (ax_r, ax_f) = plt.subplots(1, 2, figsize=(11, 4.2))
    for model, name in ((champion, "champion"), (challenger, "challenger")):
        s = model.score_templates([x.template for x in held])
        rec = [float(w[(s >= t) & y].sum() / max(w[y].sum(), 1e-12)) for t in ts]
        fwd = [float(w[s >= t].sum() / max(w.sum(), 1e-12)) for t in ts]
        for ax, vals in ((ax_r, rec), (ax_f, fwd)):
            (line,) = ax.plot(ts, vals, label=f"{name} {model.version}")
            ax.axvline(model.threshold, color=line.get_color(), linestyle=":", linewidth=1)
    ax_r.set(title="recall (held-out labels, weighted)", xlabel="threshold", ylim=(0, 1.02))
    ax_f.set(title="forward ratio", xlabel="threshold", yscale="log")
    for ax in (ax_r, ax_f):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"retrain-{challenger.version}.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
