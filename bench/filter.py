"""Filter benchmark: scoring throughput on one core, training time, model size. Prints a table.

    make bench          (or: .venv/bin/python -m bench.filter)

Scoring runs in batches of 1,000 real lines from ../shared/data. "first pass" streams each data set
once through a freshly loaded model (its caches start empty): what a worker sees. "no cache" sends
every line through masking, featurization and ONNX Runtime: the worst case of never-repeating text.
"repeat pass" streams the same lines again (every key cached): the ceiling of the hot path.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from sluice.models.filter import Example, FilterModel, default_model, normalize_batch, train
from sluice.models.filter.datasets import (
    load_bgl,
    load_hdfs,
    load_nezha_window,
    nezha_windows,
    template_cover,
)

BATCH = 1000


def _rate(n: int, fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def _batches(lines: Sequence[str]) -> list[Sequence[str]]:
    return [lines[i : i + BATCH] for i in range(0, len(lines), BATCH)]


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    bgl = load_bgl()
    hdfs = load_hdfs()
    nezha = [x.text for w in nezha_windows() for x in load_nezha_window(w)]
    sets = {"HDFS": hdfs.texts, "BGL": bgl.texts, "Nezha Train-Ticket": nezha}
    base = default_model()
    print(f"filter {base.version}, {len(base.data) / 1e6:.2f} MB, one core, batches of {BATCH}\n")
    cols = f"{'first pass':>14s} {'repeat pass':>14s} {'no cache':>14s}"
    print(f"{'data set':20s} {'lines':>9s} {'chars/line':>10s} {cols}")
    for name, lines in sets.items():
        fresh = FilterModel(base.data)
        first = _rate(len(lines), lambda f=fresh, ls=lines: [f.score(b) for b in _batches(ls)])
        again = _rate(len(lines), lambda f=fresh, ls=lines: [f.score(b) for b in _batches(ls)])
        sample = lines[:50_000]
        raw = _rate(
            len(sample),
            lambda s=sample: [base.score_templates(normalize_batch(b)) for b in _batches(s)],
        )
        cpl = sum(map(len, lines)) / len(lines)
        rates = f"{first:10,.0f} l/s {again:10,.0f} l/s {raw:10,.0f} l/s"
        print(f"{name:20s} {len(lines):9d} {cpl:10.0f} {rates}")

    # Training sets of real lines with real labels, sampled with replacement to size.
    cover = template_cover(hdfs.texts, hdfs.blocks, hdfs.block_anomalous, 0.99)
    pool = [Example(t, bool(y), 1.0, "dataset") for t, y in zip(bgl.texts, bgl.labels, strict=True)]
    pool += [
        Example(t, tpl in cover, 1.0, "dataset")
        for t, tpl in zip(hdfs.texts, normalize_batch(hdfs.texts), strict=True)
    ]
    nz = [x for w in nezha_windows()[:20] for x in load_nezha_window(w)]
    pool += [Example(x.text, x.level in ("ERROR", "FATAL"), 1.0, "heuristic") for x in nz]
    rnd = random.Random(0)
    print(f"\n{'training examples':>18s} {'seconds':>9s} {'model size':>12s}")
    for n in (10_000, 100_000, 1_000_000):
        ex = rnd.choices(pool, k=n)
        t0 = time.perf_counter()
        m = train(ex, seed=0)
        dt = time.perf_counter() - t0
        print(f"{n:18,d} {dt:9.2f} {len(m.data) / 1e6:11.2f} MB")


if __name__ == "__main__":
    main()
