"""Plain-text formats on the 16 loghub samples: what the header gives, and what it costs.

Per system: the format detected, the share of lines with their own time, a service and a level,
and the number of templates before (raw lines) and after (the messages, header read). Then the
filter stage's `screen_batch` on the same text lines with and without header reading (three
runs each, interleaved), and `sluice model score` on the raw lines and on the messages.

    python -m bench.formats            # also in `make bench`; bench/results/formats.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sluice.models.filter import OnnxFilter, default_model, normalize_batch
from sluice.models.training.datasets import shared_data_dir
from sluice.stream import PipelineSettings
from sluice.stream.filtering.screen import screen_batch
from sluice.stream.ingest.parsing import parse_batch
from sluice.stream.ingest.textformats import TextFormats

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LOGHUB = shared_data_dir() / "loghub"
BATCH = 2_000


def _systems() -> list[str]:
    return sorted(p.name for p in LOGHUB.iterdir() if (p / f"{p.name}_2k.log").exists())


def _raw(system: str) -> list[bytes]:
    return (LOGHUB / system / f"{system}_2k.log").read_bytes().splitlines()


def per_system() -> list[dict[str, object]]:
    rows = []
    print(f"{'system':12} {'format':16} {'time':>6} {'service':>8} {'level':>6}  templates")
    for s in _systems():
        raw = _raw(s)
        path = LOGHUB / s / f"{s}_2k.log"
        text = TextFormats(reference=os.path.getmtime(path))
        parsed = parse_batch(raw, 1 << 20, text, [s] * len(raw))
        n = len(raw)
        heads = [text.full(r) for r in parsed.headers if r is not None]
        timed = sum(1 for h in heads if text.time(h, None) is not None)
        named = sum(1 for h in heads if h.service)
        levelled = sum(1 for h in heads if h.level)
        before = len(set(normalize_batch([r.decode("utf-8", "replace") for r in raw])))
        after = len(set(normalize_batch(parsed.messages)))
        fmt = text.format_of(s)
        row = {"system": s, "format": fmt.name if fmt else None, "lines": n,
               "time": timed / n, "service": named / n, "level": levelled / n,
               "templates_before": before, "templates_after": after}  # fmt: skip
        rows.append(row)
        print(f"{s:12} {row['format'] or '-':16} {timed / n:6.3f} {named / n:8.3f} "
              f"{levelled / n:6.3f}  {before} -> {after}")  # fmt: skip
    return rows


def stage_throughput(repeat: int = 6, runs: int = 3) -> dict[str, dict[str, list[float]]]:
    """screen_batch over every system's lines (`repeat` times each, batches of 2,000 from one
    file each), header reading off (as before) and on, interleaved; as a worker calls it (each
    record's timestamp given, signals off: only forwarded lines get their time read). The same
    lines as JSON events too, where header reading has nothing to do."""
    import orjson

    text_streams = [(s, _raw(s) * repeat) for s in _systems()]
    json_streams = [
        (s, [orjson.dumps({"service": s, "message": v.decode("utf-8", "replace")}) for v in vs])
        for s, vs in text_streams
    ]
    total = sum(len(v) for _, v in text_streams)
    joined = PipelineSettings()  # multi-line joining on, the default
    out: dict[str, dict[str, list[float]]] = {}
    for kind, streams in (("text lines", text_streams), ("JSON events", json_streams)):
        rates: dict[str, list[float]] = {"before (no header reading)": [], "after (formats)": [],
                                         "formats, no multi-line": []}  # fmt: skip
        for _ in range(runs):
            for mode in rates:
                cfg = PipelineSettings(text={"multiline": False}) if "no multi" in mode else joined
                filt = OnnxFilter(default_model())
                text = None if mode.startswith("before") else cfg.text.formats()
                t0 = time.perf_counter()
                for s, values in streams:
                    for i in range(0, len(values), BATCH):
                        batch = values[i : i + BATCH]
                        where = lambda j, s=s: (f"{s}.log:{j}", None, None)  # type: ignore[misc]  # noqa: E731
                        screen_batch(batch, [None] * len(batch), where, filt, cfg,
                                     [1.7e9] * len(batch), None, None, None, text)  # fmt: skip
                rates[mode].append(total / (time.perf_counter() - t0))
        out[kind] = rates
        print(f"\nfilter stage (screen_batch) on {total:,} loghub {kind}, batches of {BATCH:,}, "
              f"{runs} runs each:")  # fmt: skip
        for mode, r in rates.items():
            print(f"  {mode:28s} " + ", ".join(f"{x:,.0f}" for x in r) + " lines/s")
    return out


def model_score_cli() -> dict[str, float]:
    """`sluice model score` on the raw lines and on the messages (the same lines, header read)."""
    raw = [r for s in _systems() for r in _raw(s)] * 15
    messages: list[str] = []
    for s in _systems():
        v = _raw(s)
        messages += parse_batch(v, 1 << 20, TextFormats(), [s] * len(v)).messages
    messages *= 15
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, lines in (("raw lines", [r.decode("utf-8", "replace") for r in raw]),
                            ("messages", messages)):  # fmt: skip
            path = Path(tmp) / "in.log"
            path.write_text("\n".join(x.replace("\n", " ") for x in lines) + "\n")
            with open(path, "rb") as src:
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "sluice.stream", "model", "score"],
                               stdin=src, stdout=subprocess.DEVNULL, check=True)  # fmt: skip
                out[name] = len(lines) / (time.perf_counter() - t0)
    print(f"\n`sluice model score` on {len(raw):,} lines: "
          + ", ".join(f"{k} {v:,.0f} lines/s" for k, v in out.items()))  # fmt: skip
    return out


def mixed(seeds: tuple[int, ...] = (1, 2, 3)) -> list[float]:
    """Every system's lines shuffled into one source (as a server's log mixes syslog, web server
    and application lines): the share of lines read with the format and service they get when
    their system is read alone. Held out: the per-line reading was written on a fixture of
    its own (`tests/fixtures/server-mixed.log`), not on these samples."""
    import random

    alone: dict[str, list[tuple[str, str | None] | None]] = {}
    lines: list[tuple[str, int, str]] = []
    for s in _systems():
        raw = [x.decode("utf-8", "replace") for x in _raw(s)]
        text = TextFormats()
        alone[s] = [(h.format, h.service) if (h := text.header(s, x)) else None for x in raw]
        lines += [(s, i, x) for i, x in enumerate(raw)]
    shares = []
    for seed in seeds:
        random.Random(seed).shuffle(lines)
        text = TextFormats()
        same = 0
        for s, i, x in lines:
            h = text.header("mixed.log", x)
            same += ((h.format, h.service) if h else None) == alone[s][i]
        shares.append(same / len(lines))
    print(
        f"\n{len(alone)} systems' {len(lines):,} lines shuffled into one source, "
        f"{len(seeds)} orders: read as alone in " + ", ".join(f"{x:.4f}" for x in shares)
    )
    return shares


def main() -> None:
    results = {
        "benchmark": "formats",
        "command": "python -m bench.formats",
        "per_system": per_system(),
        "mixed_read_as_alone": mixed(),
        "filter_stage": stage_throughput(),
        "model_score_cli": model_score_cli(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "formats.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
