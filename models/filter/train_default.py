"""Train the default filter that ships in the package, from every labeled source in ../shared/data.

    python -m sluice.models.filter.train_default [--out models/filter/default.onnx] [--seed 0]
        [--subwords 4] [--severity 1] [--heldout-recall 0.95] [--no-write]

Every user runs Sluice on a system the filter has never seen, so the recipe is judged by
**leave-one-system-out**: for each labeled system, a model trained on all the others scores it.

Sources (labels; `models.filter.datasets` documents each rule):
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
split (in distribution), and (b) the threshold at which the held-out systems' mean recall
(out-of-fold scores, each system weighing the same; systems with at least `--min-relevant`
relevant lines) reaches `--heldout-recall`. Each system's
figures in the table use the threshold (b) chosen without that system (nested), so no system
is scored at a threshold it helped to choose.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sluice.models.filter._features import FeatureSpec
from sluice.models.filter._model import FilterModel, ValidationMetrics
from sluice.models.filter._normalize import normalize_batch
from sluice.models.filter._train import Example, train
from sluice.models.filter._types import Source
from sluice.models.filter.datasets import (
    UNLABELED_LOGHUB,
    WEAK_LOGHUB,
    load_bgl,
    load_hdfs,
    load_loghub,
    load_nezha_window,
    nezha_windows,
    template_cover,
)

__all__ = ["System", "load_systems", "main", "recipe_examples"]

DEFAULT_OUT = Path(__file__).with_name("default.onnx")


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
        out.append(System(name, w.texts, w.labels))
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


def heldout_threshold(
    oof: dict[str, npt.NDArray[np.float32]], systems: dict[str, System], target: float
) -> float:
    """The highest threshold at which the mean recall of these systems reaches `target`."""
    candidates = np.unique(np.concatenate([oof[n][systems[n].labels == 1] for n in oof]))
    lo, hi = 0, len(candidates) - 1  # mean recall falls as the threshold rises: bisect
    best = float(candidates[0]) if len(candidates) else 0.5
    while lo <= hi:
        mid = (lo + hi) // 2
        t = float(candidates[mid])
        if np.mean([_recall_at(oof[n], systems[n], t) for n in oof]) >= target:
            best, lo = t, mid + 1
        else:
            hi = mid - 1
    return best


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

    # Leave one system out: a model trained on the others scores each labeled system.
    oof: dict[str, npt.NDArray[np.float32]] = {}
    fold_threshold: dict[str, float] = {}
    for s in labeled:
        m = _fit(recipe_examples([x for x in systems if x is not s], args.cap), spec, args.seed,
                 args.target_recall)  # fmt: skip
        oof[s.name] = m.score(s.texts)
        fold_threshold[s.name] = m.threshold
        print(f"  fold without {s.name:12s} trained ({time.perf_counter() - t0:.0f}s)")
    # Systems with too few relevant lines to judge a threshold by are reported, not used.
    with_positives = {
        n: v for n, v in oof.items() if (by_name[n].labels == 1).sum() >= args.min_relevant
    }
    t_heldout = heldout_threshold(with_positives, by_name, args.heldout_recall)

    model = _fit(recipe_examples(systems, args.cap), spec, args.seed, args.target_recall)
    threshold = float(np.nextafter(np.float32(min(model.threshold, t_heldout)), np.float32(0)))
    print(f"\nthresholds: in distribution {model.threshold:.4f}, held-out systems "
          f"{t_heldout:.4f} -> {threshold:.4f}")  # fmt: skip

    print("\nleave-one-system-out (each scored by a model trained without it, at the held-out "
          "threshold chosen without it):")  # fmt: skip
    print(f"  {'system':12s} {'lines':>7s} {'relevant':>8s}  recall  fwd ratio  rel. ratio")
    table: dict[str, dict[str, float]] = {}
    for s in labeled:
        others = {n: v for n, v in with_positives.items() if n != s.name}
        t = heldout_threshold(others, by_name, args.heldout_recall) if others else threshold
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

    val = model.meta.validation
    model = model.with_threshold(
        threshold,
        ValidationMetrics(
            precision=val.precision if val else 0.0,
            recall=float(np.mean(recalls)),
            forward_ratio=float(np.mean([v["forward_ratio"] for v in table.values()])),
            positive_ratio=float(np.mean([v["positive_ratio"] for v in table.values()])),
            n=sum(len(s.texts) for s in labeled),
        ),
    )
    print(f"\ndefault filter {model.version}: {len(model.data) / 1e6:.2f} MB, threshold "
          f"{threshold:.4f}, subwords {args.subwords}, severity {args.severity}, "
          f"{time.perf_counter() - t0:.0f}s")  # fmt: skip
    print("(its validation figures are the leave-one-system-out means above)")
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        model.save(args.out)
        print(f"model written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
