"""Train the default filter that ships in the package, from every labeled source in ../shared/data.

    python -m sluice.models.training.train_default [--out models/filter/default.onnx] [--seed 0]
        [--subwords 4] [--severity 1] [--heldout-recall 0.95] [--no-write]

Every user runs Sluice on a system the filter has never seen, so the recipe is judged by
**leave-one-system-out**: for each labeled system, a model trained on all the others scores it.

Sources (labels; `models.training.datasets` documents each rule):
- BGL (loghub 2k): per line, an alert category or not.
- HDFS (2% sample, 222k lines): blocks are labeled; a line is relevant when its template is in
  the greedy cover of anomalous blocks (`datasets.template_cover`). Block recall is reported.
- Nezha Train-Ticket (84 windows): ERROR or FATAL level (source "heuristic").
- loghub Android, Apache, Hadoop, OpenStack, Spark, Windows, Zookeeper: weak labels from their
  own severity (ERROR/FATAL/... relevant, WARN unknown, the rest not); Thunderbird's own labels.
- loghub HDFS, HPC, HealthApp, Linux, Mac, OpenSSH, Proxifier: no severity, no labels; not
  trained on, reported as background (forward ratio only).
Each system weighs at most `--cap` lines (HDFS and Nezha would drown the 2k-line systems).

Threshold: the lower of (a) the final model's own, set for `--target-recall` on its validation
split (in distribution), and (b) the threshold for held-out systems (`heldout_threshold`): where
their mean recall (out-of-fold scores, each system weighing the same; systems with at least
`--min-relevant` relevant lines) reaches `--heldout-recall`, unless their mean forward ratio
would pass twice their mean relevant ratio on the way: then where it reaches that. Each system's
figures in the table use the threshold (b) chosen without that system (nested), so no system
is scored at a threshold it helped to choose.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sluice.models.filter._features import FeatureSpec
from sluice.models.filter._model import FilterModel
from sluice.models.filter._normalize import normalize_batch
from sluice.models.filter._train import Example, train, validation_at
from sluice.models.filter._types import Source
from sluice.models.training.datasets import (
    UNLABELED_LOGHUB,
    WEAK_LOGHUB,
    load_bgl,
    load_hdfs,
    load_loghub,
    load_nezha_window,
    nezha_windows,
    template_cover,
)

__all__ = ["Recipe", "System", "load_systems", "main", "recipe_examples"]

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "filter" / "default.onnx"  # the shipped one


@dataclass
class System:
    """One source's lines with a label each (1 relevant, 0 not, -1 unknown)."""

    name: str
    texts: list[str]
    labels: npt.NDArray[np.int8]
    source: Source = "dataset"
    blocks: list[str] | None = None
    block_anomalous: dict[str, bool] | None = None

    @property
    def labeled(self) -> bool:
        return bool((self.labels >= 0).any())

    @property
    def has_positives(self) -> bool:
        return bool((self.labels == 1).any())


def load_systems(data_dir: Path | None = None) -> list[System]:
    bgl = load_bgl(data_dir)
    out = [System("BGL", bgl.texts, bgl.labels.astype(np.int8))]
    h = load_hdfs(data_dir)
    cover = template_cover(h.texts, h.blocks, h.block_anomalous, 0.99)
    y = np.array([t in cover for t in normalize_batch(h.texts)], dtype=np.int8)
    out.append(System("HDFS", h.texts, y, "dataset", h.blocks, h.block_anomalous))
    lines = [x for w in nezha_windows(data_dir) for x in load_nezha_window(w)]
    y = np.array([x.level in ("ERROR", "FATAL") for x in lines], dtype=np.int8)
    out.append(System("Nezha", [x.text for x in lines], y, "heuristic"))
    for name in (*WEAK_LOGHUB, *UNLABELED_LOGHUB):
        w = load_loghub(name, data_dir)
        out.append(System(name if name != "HDFS" else "HDFS-loghub", w.texts, w.labels))
    assert len({s.name for s in out}) == len(out), "system names must be unique"
    return out


def recipe_examples(systems: list[System], cap: int) -> list[Example]:
    """Labeled lines of the systems, each system weighing at most `cap` lines in all."""
    out: list[Example] = []
    for s in systems:
        idx = np.flatnonzero(s.labels >= 0)
        if not idx.size:
            continue
        w = min(1.0, cap / idx.size)
        out += [Example(s.texts[i], bool(s.labels[i]), w, s.source) for i in idx.tolist()]
    return out


def _fit(examples: list[Example], spec: FeatureSpec, seed: int, target: float) -> FilterModel:
    return train(examples, target_recall=target, seed=seed, spec=spec, created_at=datetime.now(UTC))


def _recall_at(scores: npt.NDArray[np.float32], s: System, t: float) -> float:
    """Line recall, or block recall for a system with blocks."""
    flagged = scores >= t
    if s.blocks is not None and s.block_anomalous is not None:
        anomalous = {b for b, a in s.block_anomalous.items() if a}
        hit = {b for b, f in zip(s.blocks, flagged.tolist(), strict=True) if f and b in anomalous}
        return len(hit) / max(1, len(anomalous))
    pos = s.labels == 1
    return float((flagged & pos).sum() / max(1, int(pos.sum())))


def judges(s: System, min_relevant: int) -> bool:
    """Whether a system has enough relevant lines to take part in choosing the threshold."""
    return int((s.labels == 1).sum()) >= min_relevant


def heldout_threshold(
    oof: dict[str, npt.NDArray[np.float32]],
    systems: dict[str, System],
    target: float,
    min_relevant: int,
    forward_factor: float = 2.0,
) -> float:
    """The threshold for systems held out (out-of-fold scores, each system weighing the same):
    the highest at which the judging systems' (`min_relevant` relevant lines or more) mean recall
    reaches `target`, unless the mean forward ratio there exceeds `forward_factor` times the mean
    relevant ratio: then the lowest threshold that keeps within it. Recall is bought with
    forwarding, and a system the others cannot teach (HDFS's block anomalies) would otherwise
    pull the threshold to zero; first sight and the loop are there for such a system."""
    judging = [n for n in oof if judges(systems[n], min_relevant)]
    ratio = float(np.mean([(systems[n].labels == 1).mean() for n in oof]))
    budget = forward_factor * ratio

    def recall(t: float) -> float:
        return float(np.mean([_recall_at(oof[n], systems[n], t) for n in judging]))

    def forward(t: float) -> float:
        return float(np.mean([(oof[n] >= t).mean() for n in oof]))

    grid = np.unique(np.quantile(np.concatenate(list(oof.values())), np.linspace(0, 1, 4001)))
    candidates = np.unique(
        np.concatenate([grid, *(oof[n][systems[n].labels == 1] for n in judging)])
    )
    t_recall = _highest(candidates, lambda t: recall(t) >= target)
    t_forward = _lowest(candidates, lambda t: forward(t) <= budget)
    return max(t_recall, t_forward)


def _highest(candidates: npt.NDArray[np.float32], ok: Callable[[float], bool]) -> float:
    """The highest candidate for which ok holds, ok being true below some point (bisection)."""
    lo, hi, best = 0, len(candidates) - 1, float(candidates[0])
    while lo <= hi:
        mid = (lo + hi) // 2
        if ok(float(candidates[mid])):
            best, lo = float(candidates[mid]), mid + 1
        else:
            hi = mid - 1
    return best


def _lowest(candidates: npt.NDArray[np.float32], ok: Callable[[float], bool]) -> float:
    """The lowest candidate for which ok holds, ok being true above some point (bisection)."""
    lo, hi, best = 0, len(candidates) - 1, float(candidates[-1])
    while lo <= hi:
        mid = (lo + hi) // 2
        if ok(float(candidates[mid])):
            best, hi = float(candidates[mid]), mid - 1
        else:
            lo = mid + 1
    return best


@dataclass(frozen=True)
class Recipe:
    """How the default model is made, for this script and for benchmarks that leave a system
    out of it (`bench.loop`)."""

    spec: FeatureSpec
    seed: int = 0
    target_recall: float = 0.99
    heldout_recall: float = 0.95
    cap: int = 20000
    min_relevant: int = 20

    def judges(self, s: System) -> bool:
        return judges(s, self.min_relevant)

    def out_of_fold(
        self, systems: list[System]
    ) -> tuple[dict[str, npt.NDArray[np.float32]], dict[str, float]]:
        """Each labeled system's scores from a model trained on the others, and that model's own
        threshold."""
        oof: dict[str, npt.NDArray[np.float32]] = {}
        fold_threshold: dict[str, float] = {}
        for s in systems:
            if not s.labeled:
                continue
            others = recipe_examples([x for x in systems if x is not s], self.cap)
            m = _fit(others, self.spec, self.seed, self.target_recall)
            oof[s.name] = m.score(s.texts)
            fold_threshold[s.name] = m.threshold
        return oof, fold_threshold

    def fit(self, systems: list[System], created_by: str | None = None) -> FilterModel:
        """The model on every system, its threshold lowered to where the systems held out reach
        `heldout_recall` on average (never above its own in-distribution one)."""
        oof, _ = self.out_of_fold(systems)
        by_name = {s.name: s for s in systems}
        t_heldout = (
            heldout_threshold(oof, by_name, self.heldout_recall, self.min_relevant) if oof else 1.0
        )
        examples = recipe_examples(systems, self.cap)
        model = train(examples, target_recall=self.target_recall, seed=self.seed, spec=self.spec,
                      created_by=created_by)  # fmt: skip
        t = float(np.nextafter(np.float32(min(model.threshold, t_heldout)), np.float32(0)))
        return model.with_threshold(t, validation_at(model, examples, t, seed=self.seed))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-recall", type=float, default=0.99)
    ap.add_argument("--heldout-recall", type=float, default=0.95)
    ap.add_argument("--subwords", type=int, default=4, help="0: words only (the old recipe)")
    ap.add_argument(
        "--severity",
        type=int,
        default=1,
        choices=(0, 1),
        help="failure-vocabulary features (0: none)",
    )
    ap.add_argument("--cap", type=int, default=20000, help="lines a system weighs at most")
    ap.add_argument(
        "--min-relevant",
        type=int,
        default=20,
        help="relevant lines a system needs to take part in choosing the threshold",
    )
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--no-write", action="store_true", help="report only")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    t0 = time.perf_counter()
    spec = FeatureSpec(
        subwords=args.subwords,
        severity=args.severity,
        max_features=1024 if args.subwords else 256,
    )
    systems = load_systems(args.data_dir)
    by_name = {s.name: s for s in systems}
    labeled = [s for s in systems if s.labeled]
    print(
        f"{len(systems)} systems loaded ({len(labeled)} labeled) in {time.perf_counter() - t0:.0f}s"
    )

    recipe = Recipe(spec, args.seed, args.target_recall, args.heldout_recall, args.cap,
                    args.min_relevant)  # fmt: skip
    oof, fold_threshold = recipe.out_of_fold(systems)
    # Systems with too few relevant lines to judge a threshold by are reported, not used.
    with_positives = {n: v for n, v in oof.items() if recipe.judges(by_name[n])}
    t_heldout = heldout_threshold(oof, by_name, args.heldout_recall, args.min_relevant)
    examples = recipe_examples(systems, args.cap)
    model = _fit(examples, spec, args.seed, args.target_recall)
    threshold = float(np.nextafter(np.float32(min(model.threshold, t_heldout)), np.float32(0)))
    print(f"  {len(oof)} folds and the final model trained ({time.perf_counter() - t0:.0f}s)")
    print(f"\nthresholds: in distribution {model.threshold:.4f}, held-out systems "
          f"{t_heldout:.4f} -> {threshold:.4f}")  # fmt: skip

    print("\nleave-one-system-out (each scored by a model trained without it, at the held-out "
          "threshold chosen without it):")  # fmt: skip
    print(f"  {'system':12s} {'lines':>7s} {'relevant':>8s}  recall  fwd ratio  rel. ratio")
    table: dict[str, dict[str, float]] = {}
    for s in labeled:
        others = {n: v for n, v in oof.items() if n != s.name}
        t = heldout_threshold(others, by_name, args.heldout_recall, args.min_relevant)
        t = min(t, fold_threshold[s.name])
        scores = oof[s.name]
        pos = int((s.labels == 1).sum())
        rec = _recall_at(scores, s, t) if pos else float("nan")
        fwd = float((scores >= t).mean())
        table[s.name] = {"recall": rec, "forward_ratio": fwd, "positive_ratio": pos / len(s.texts)}
        kind = " (blocks)" if s.blocks is not None else ""
        print(f"  {s.name:12s} {len(s.texts):7d} {pos:8d}  {rec:6.3f}  {fwd:9.4f}  "
              f"{pos / len(s.texts):10.4f}{kind}")  # fmt: skip
    background = [s for s in systems if not s.labeled]
    fwd_bg = {s.name: float((model.score(s.texts) >= threshold).mean()) for s in background}
    print(
        "  background (no labels; final model, final threshold): forward ratio "
        + ", ".join(f"{n} {v:.3f}" for n, v in fwd_bg.items())
    )
    for t in (0.01, 0.03, 0.1, 0.2, 0.3, 0.5):
        r = np.mean([_recall_at(v, by_name[n], t) for n, v in with_positives.items()])
        f = np.mean([float((v >= t).mean()) for v in oof.values()])
        print(f"  at {t:.2f}: mean held-out recall {r:.3f}, mean forward ratio {f:.3f}")
    recalls = [v["recall"] for n, v in table.items() if n in with_positives]
    print(f"  mean held-out recall {np.mean(recalls):.3f}, lowest {min(recalls):.3f}")

    # Its figures, as `sluice model info` shows them: at the threshold it ships with, on the
    # validation split its training held out (in distribution: one split, every figure from it,
    # so precision x forward ratio = recall x positive ratio). The held-out systems' figures are
    # the table above (README), not these.
    shipped = validation_at(model, examples, threshold, seed=args.seed)
    model = model.with_threshold(threshold, shipped)
    print(f"\ndefault filter {model.version}: {len(model.data) / 1e6:.2f} MB, threshold "
          f"{threshold:.4f}, subwords {args.subwords}, severity {args.severity}, "
          f"{time.perf_counter() - t0:.0f}s")  # fmt: skip
    v = model.meta.validation
    if v is not None:
        print(f"validation (in distribution, a 20% split of the training lines, at the shipped "
              f"threshold): recall {v.recall:.3f}, precision {v.precision:.3f}, forward ratio "
              f"{v.forward_ratio:.4f}, positive ratio {v.positive_ratio:.4f}")  # fmt: skip
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        model.save(args.out)
        print(f"model written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
