"""Filter benchmark: scoring throughput on one core, training time, model size. Prints a table.

    make bench          (or: .venv/bin/python -m bench.filter)

Then, beside the words-only model that shipped before (bench/data/previous_default.onnx):
`sluice model score` lines/s through the CLI on 1M mixed loghub lines (the 16 systems' 32,000
lines shuffled and repeated, in one process each, wall clock), their recall on 50 failure lines
and forward ratio on 50 routine lines of common software none of the training sources hold
(bench/data/generic_lines.jsonl), and the shipped recipe's leave-one-system-out table
(`models.training.train_default --no-write`). Written to bench/results/filter.json.

Scoring runs in batches of 1,000 real lines from ../shared/data. "first pass" streams each data set
once through a freshly loaded model (its caches start empty): what a worker sees. "no cache" sends
every line through masking, featurization and ONNX Runtime: the worst case of never-repeating text.
"repeat pass" streams the same lines again (every key cached): the ceiling of the hot path.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from sluice.models.filter import (
    Example,
    FilterModel,
    OnnxFilter,
    default_model,
    normalize_batch,
    train,
)
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

BATCH = 1000
HERE = Path(__file__).resolve().parent
PREVIOUS = HERE / "data" / "previous_default.onnx"
GENERIC = HERE / "data" / "generic_lines.jsonl"
RESULTS = HERE / "results"


def _cli_rate(model: Path, lines_file: Path, n: int) -> float:
    """Lines per second of `sluice model score MODEL < FILE`, wall clock of the whole process."""
    with open(lines_file, "rb") as src:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "sluice.stream", "model", "score", str(model)],
            stdin=src, stdout=subprocess.DEVNULL, check=True,
        )  # fmt: skip
        return n / (time.perf_counter() - t0)


def side_by_side() -> dict[str, object]:
    """The previous default model and the shipped one: CLI speed and unseen-software recall."""
    mixed = [t for s in (*WEAK_LOGHUB, *UNLABELED_LOGHUB, "BGL") for t in _loghub_texts(s)]
    rnd = random.Random(0)
    n = 1_000_000
    lines = [mixed[rnd.randrange(len(mixed))] for _ in range(n)]
    rows = [json.loads(x) for x in GENERIC.open()]
    out: dict[str, object] = {"lines": n, "distinct_lines": len(set(lines))}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mixed.log"
        path.write_text("\n".join(x.replace("\n", " ") for x in lines) + "\n")
        shipped = Path(tmp) / "shipped.onnx"
        default_model().save(shipped)
        print(f"\n`sluice model score` on {n:,} mixed loghub lines, and 50 failure / 50 routine "
              "lines of software outside the training data:")  # fmt: skip
        for name, model_path in (("previous (words only)", PREVIOUS), ("shipped", shipped)):
            m = FilterModel.from_path(model_path)
            rate = _cli_rate(model_path, path, n)
            flagged = m.score([r["text"] for r in rows]) >= m.threshold
            fails = sum(bool(f) for f, r in zip(flagged, rows, strict=True) if r["label"])
            routine = sum(bool(f) for f, r in zip(flagged, rows, strict=True) if not r["label"])
            print(f"  {name:22s} {m.version}  {rate:10,.0f} lines/s   failures forwarded "
                  f"{fails}/50, routine forwarded {routine}/50")  # fmt: skip
            out[name] = {"version": m.version, "cli_lines_per_s": rate,
                         "failures_forwarded": fails, "routine_forwarded": routine}  # fmt: skip
    return out


def stage_overhead(hdfs_texts: Sequence[str]) -> dict[str, float]:
    """The filter stage's `screen_batch` on 200k HDFS events (JSON, batches of 10,000): first
    sight off, on, and on with a verdict for every template (each run warmed on 20k events)."""
    import orjson

    from sluice.stream import PipelineSettings
    from sluice.stream.filtering.screen import screen_batch
    from sluice.stream.filtering.verdicts import FirstSight, VerdictCache
    from sluice.stream.records import Feedback

    values = [orjson.dumps({"service": "hdfs", "message": t}) for t in hdfs_texts[:200_000]]
    templates = set(normalize_batch(list(hdfs_texts[:200_000])))
    step = 10_000
    out: dict[str, float] = {}
    for mode in ("off", "first sight", "first sight + verdicts"):
        cfg = PipelineSettings()
        on = mode != "off"
        fs = cfg.first_sight.model_copy(update={"enabled": on, "verdicts": on})
        cfg = cfg.model_copy(update={"first_sight": fs})
        filt = OnnxFilter(default_model())
        cache = VerdictCache() if on else None
        first = FirstSight(fs) if on else None
        if cache is not None and mode.endswith("verdicts"):
            for t in templates:
                cache.apply(Feedback(template=t, label=False, source="llm", weight=1.0,
                                     model_version="m", score=None))  # fmt: skip

        def run(lo: int, hi: int, c: object = cfg, f: object = filt, v: object = cache,
                s: object = first) -> None:  # fmt: skip
            for i in range(lo, hi, step):
                batch = values[i : i + step]
                screen_batch(batch, [None] * len(batch), lambda j: ("events", 0, j), f, c,
                             None, None, v, s)  # type: ignore[arg-type]  # fmt: skip

        run(0, 20_000)
        out[mode] = _rate(len(values), lambda: run(0, len(values)))
    print("\nfilter stage (screen_batch) on 200,000 HDFS events, batches of 10,000: "
          + ", ".join(f"{k} {v:,.0f} events/s" for k, v in out.items()))  # fmt: skip
    return out


def _loghub_texts(system: str) -> list[str]:
    return load_bgl().texts if system == "BGL" else load_loghub(system).texts


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

    results = {"benchmark": "filter", "command": "python -m bench.filter",
               "side_by_side": side_by_side(),
               "filter_stage_events_per_s": stage_overhead(hdfs.texts)}  # fmt: skip
    print("\nthe shipped recipe, leave one system out (python -m "
          "sluice.models.training.train_default --no-write):")  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "sluice.models.training.train_default", "--no-write"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    print(proc.stdout)
    results["leave_one_system_out"] = proc.stdout
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "filter.json").write_text(json.dumps(results, indent=2))
    print(f"written: {RESULTS / 'filter.json'}")


if __name__ == "__main__":
    main()
