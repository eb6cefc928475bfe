"""Train the default filter that ships in the package, from the labeled logs in ../shared/data.

    python -m sluice.models.filter.train_default [--out models/filter/default.onnx] [--seed 0]

Three sources, each split with a fixed seed into train / validation / test:
- BGL lines, 60/20/20 stratified; label = the line carries an alert category.
- HDFS blocks, 60/20/20; a line's label = its template is in the greedy block cover computed on
  training blocks (see datasets.template_cover): block labels say "something in this block is
  wrong", and a line filter catches a block only by forwarding one of its lines.
- Nezha Train-Ticket windows, every 5th window (offset 3) validation and (offset 4) test; label =
  ERROR or FATAL level (source "heuristic": a prior for service logs until LLM feedback exists).
The threshold is the highest that keeps BGL line recall, HDFS block recall and Nezha error-line
recall at the target on validation; the test split is reported, never used for a choice.
"""

from __future__ import annotations

import argparse
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sluice.models.filter._model import FilterModel, ValidationMetrics
from sluice.models.filter._train import Example, choose_threshold, train
from sluice.models.filter.datasets import (
    load_bgl,
    load_hdfs,
    load_nezha_window,
    nezha_windows,
    template_cover,
)

__all__ = ["main"]

DEFAULT_OUT = Path(__file__).with_name("default.onnx")


def _split(n: int, rng: np.random.Generator, strata: npt.NDArray[np.bool_]) -> npt.NDArray[np.int8]:
    """0 = train, 1 = validation, 2 = test; 60/20/20 within each stratum."""
    part = np.zeros(n, dtype=np.int8)
    for cls in (True, False):
        idx = rng.permutation(np.flatnonzero(strata == cls))
        a, b = int(len(idx) * 0.6), int(len(idx) * 0.8)
        part[idx[a:b]], part[idx[b:]] = 1, 2
    return part


def _window_part(i: int) -> int:
    return {3: 1, 4: 2}.get(i % 5, 0)


def _block_scores(model: FilterModel, texts: list[str], blocks: list[str]) -> dict[str, float]:
    scores = model.score(texts)
    best: dict[str, float] = {}
    for b, s in zip(blocks, scores.tolist(), strict=True):
        if s > best.get(b, -1.0):
            best[b] = s
    return best


def _report(name: str, scores: npt.NDArray[np.float32], y: npt.NDArray[np.bool_], t: float) -> str:
    flagged = scores >= t
    tp = int((flagged & y).sum())
    return (
        f"{name:28s} n={len(y):7d} positives={int(y.sum()):5d} ({y.mean():.4f})  "
        f"recall={tp / max(1, int(y.sum())):.4f}  precision={tp / max(1, int(flagged.sum())):.4f}  "
        f"forward ratio={flagged.mean():.4f}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-recall", type=float, default=0.99)
    ap.add_argument("--data-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()

    bgl = load_bgl(args.data_dir)
    bgl_part = _split(len(bgl.texts), rng, bgl.labels)
    hdfs = load_hdfs(args.data_dir)
    block_ids = sorted(hdfs.block_anomalous)
    block_y = np.array([hdfs.block_anomalous[b] for b in block_ids])
    block_part = dict(zip(block_ids, _split(len(block_ids), rng, block_y).tolist(), strict=True))
    h_part = np.array([block_part[b] for b in hdfs.blocks], dtype=np.int8)

    def rows(part: int) -> tuple[list[str], list[str]]:
        idx = np.flatnonzero(h_part == part)
        return [hdfs.texts[i] for i in idx], [hdfs.blocks[i] for i in idx]

    windows = nezha_windows(args.data_dir)

    def nezha(part: int) -> tuple[list[str], npt.NDArray[np.bool_]]:
        lines = [
            x
            for i, w in enumerate(windows)
            if _window_part(i) == part
            for x in load_nezha_window(w)
        ]
        return [x.text for x in lines], np.array([x.level in ("ERROR", "FATAL") for x in lines])

    n_train, n_train_y = nezha(0)
    h_train, h_train_blocks = rows(0)
    cover = template_cover(h_train, h_train_blocks, hdfs.block_anomalous, args.target_recall)
    from sluice.models.filter._normalize import normalize_batch

    examples = [
        Example(t, bool(y), 1.0, "dataset")
        for t, y, p in zip(bgl.texts, bgl.labels, bgl_part, strict=True)
        if p == 0
    ] + [
        Example(t, tpl in cover, 1.0, "dataset")
        for t, tpl in zip(h_train, normalize_batch(h_train), strict=True)
    ]
    examples += [
        Example(t, bool(y), 1.0, "heuristic") for t, y in zip(n_train, n_train_y, strict=True)
    ]
    model = train(
        examples, target_recall=args.target_recall, seed=args.seed, created_at=datetime.now(UTC)
    )

    # Threshold on validation: both BGL line recall and HDFS block recall at the target.
    bgl_val = [bgl.texts[i] for i in np.flatnonzero(bgl_part == 1)]
    t_bgl = choose_threshold(
        model.score(bgl_val), bgl.labels[bgl_part == 1], np.ones(len(bgl_val)), args.target_recall
    )
    h_val, h_val_blocks = rows(1)
    bs = _block_scores(model, h_val, h_val_blocks)
    keys = list(bs)
    t_hdfs = choose_threshold(
        np.array([bs[k] for k in keys]),
        np.array([hdfs.block_anomalous[k] for k in keys]),
        np.ones(len(keys)),
        args.target_recall,
    )
    n_val, n_val_y = nezha(1)
    t_nezha = choose_threshold(model.score(n_val), n_val_y, np.ones(len(n_val)), args.target_recall)
    print(f"validation thresholds: BGL {t_bgl:.4f}, HDFS {t_hdfs:.4f}, Nezha {t_nezha:.4f}")
    threshold = float(np.nextafter(np.float32(min(t_bgl, t_hdfs, t_nezha)), np.float32(0)))
    val_texts = bgl_val + h_val + n_val
    val_scores = model.score(val_texts)
    val_y = np.concatenate(
        [bgl.labels[bgl_part == 1], np.array([t in cover for t in normalize_batch(h_val)]), n_val_y]
    )
    flagged = val_scores >= threshold
    validation = ValidationMetrics(
        precision=float((flagged & val_y).sum() / max(1, flagged.sum())),
        recall=float((flagged & val_y).sum() / max(1, val_y.sum())),
        forward_ratio=float(flagged.mean()),
        positive_ratio=float(val_y.mean()),
        n=len(val_texts),
    )
    model = model.with_threshold(threshold, validation)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)

    # Held-out test figures.
    bgl_test = np.flatnonzero(bgl_part == 2)
    h_test, h_test_blocks = rows(2)
    bs = _block_scores(model, h_test, h_test_blocks)
    keys = list(bs)
    anomalous_lines = np.array([hdfs.block_anomalous[b] for b in h_test_blocks])
    print(
        f"\ndefault filter {model.version}: {len(model.data) / 1e6:.2f} MB, threshold "
        f"{threshold:.4f}, {len(examples)} training lines, {time.perf_counter() - t0:.1f}s"
    )
    print(f"HDFS template cover: {len(cover)} templates labeled positive")
    print("held-out test split:")
    print(
        _report(
            "BGL alert lines",
            model.score([bgl.texts[i] for i in bgl_test]),
            bgl.labels[bgl_test],
            threshold,
        )
    )
    print(
        _report(
            "HDFS anomalous blocks",
            np.array([bs[k] for k in keys]),
            np.array([hdfs.block_anomalous[k] for k in keys]),
            threshold,
        )
    )
    print(_report("HDFS lines (of anom. blocks)", model.score(h_test), anomalous_lines, threshold))
    n_test, n_test_y = nezha(2)
    print(_report("Nezha ERROR lines", model.score(n_test), n_test_y, threshold))
    print(f"model written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
