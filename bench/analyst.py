"""Analyst benchmark on Nezha Train-Ticket faults: evidence, heuristic top-3, compression ratio.

    .venv/bin/python -m bench.analyst     (part of `make bench`)

For each injected fault, the window files from the injection minute to two minutes later are one
bundle: every line is scored by the shipped default filter; flagged lines plus a 0.5% audit
sample of the rest (seed 0) go into the bundle, as the pipeline would send them. Reported per
fault type: how often the bundle holds evidence (any event) from the injected service, how often
the heuristic analyst names it among its top-3 affected services, and the token ratio between
raw lines and the compressed prompt (counted with cl100k_base).

Signals: a `SignalDetector` reads every line of the day in time order (the filter
stage's view: all events, not only flagged ones) and gives each fault span its signals (silences,
drops, spikes, new templates, slow edges). The same bundles are analysed without and with them,
side by side: top-1 and top-3 per fault type, tokens per bundle, and what the fault-free window
raises. Figures are written to bench/results/analyst.json.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sluice.models.analyst import (
    Bundle,
    BundleEvent,
    HeuristicAnalyst,
    Signal,
    compress,
    token_counter,
)
from sluice.models.filter import FilterModel, default_model, normalize_batch
from sluice.models.training.datasets import NezhaLine, load_nezha_window, shared_data_dir
from sluice.stream.signals.detector import SignalDetector

RESULTS = Path(__file__).resolve().parent / "results" / "analyst.json"
SPAN = timedelta(minutes=3)

AUDIT_RATE = 0.005
BUDGET = 6000


def _ts(raw: str) -> datetime:
    return datetime.fromisoformat(raw[:26].rstrip("Z") + "+00:00")


def _event(x: NezhaLine, audit: bool = False) -> BundleEvent:
    return BundleEvent(
        x.service, x.text, x.level, _ts(x.timestamp), x.trace_id, x.span_id, audit=audit
    )


def fault_bundles(data: Path) -> list[tuple[dict[str, str], list[NezhaLine]]]:
    base = data / "nezha-trainticket" / "2023-01-29"
    faults = [
        f for hour in json.loads((base / "fault_list.json").read_text()).values() for f in hour
    ]
    out = []
    for f in faults:
        t = datetime.strptime(f["inject_time"], "%Y-%m-%d %H:%M:%S")
        files = [base / f"{(t + timedelta(minutes=m)):%H_%M}_log.csv.gz" for m in range(3)]
        lines = [x for p in files if p.exists() for x in load_nezha_window(p)]
        if lines:
            out.append((f, lines))
    return out


def _normal_file(data: Path) -> Path:
    return data / "nezha-trainticket" / "normal-2023-01-29" / "08_50_log.csv.gz"


def _start(fault: dict[str, str]) -> datetime:
    """The injection time on the logs' clock (their timestamps and the file names agree)."""
    return datetime.strptime(fault["inject_time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def _epoch(x: NezhaLine) -> float:
    return _ts(x.timestamp).timestamp()


class DaySignals:
    """Every line of the day's files (and the fault-free window) through one SignalDetector, in
    time order, as the filter stage would see them; `at(start)` gives a span's signals once the
    files up to its end have been read."""

    def __init__(self, data: Path) -> None:
        day = data / "nezha-trainticket" / "2023-01-29"
        normal = data / "nezha-trainticket" / "normal-2023-01-29"
        self._files = sorted([*day.glob("*_log.csv.gz"), *normal.glob("*_log.csv.gz")],
                             key=lambda p: p.name)  # fmt: skip
        self._read = 0
        self.detector = SignalDetector()
        self.lines = 0

    def warm(self) -> None:
        """History: the day once, 24 hours earlier ("yesterday"), so that the first faults are
        judged against a baseline too. By the time a span is judged, its own copy from the day
        before weighs nothing in the baseline (tens of windows of exponential decay later)."""
        for path in self._files:
            self._observe(load_nezha_window(path), shift=-86400.0)

    def _observe(self, lines: list[NezhaLine], shift: float = 0.0) -> None:
        lines.sort(key=_epoch)
        self.detector.observe(
            [_epoch(x) + shift for x in lines],
            [x.service for x in lines],
            normalize_batch([x.text for x in lines]),
            [x.trace_id or None for x in lines],
        )
        self.lines += len(lines)

    def at(self, start: datetime, span: timedelta = SPAN) -> list[Signal]:
        end = start + span
        while self._read < len(self._files) and self._files[self._read].name <= f"{end:%H_%M}":
            self._observe(load_nezha_window(self._files[self._read]))
            self._read += 1
        return self.detector.signals(start.timestamp(), end.timestamp())


def _rank(heuristic: HeuristicAnalyst, bundle: Bundle) -> tuple[list[str], str, int]:
    """Top-3 root-cause ranking, severity and prompt tokens of one bundle."""
    digest = compress(bundle, BUDGET)
    report = heuristic.from_digest(bundle, digest, "heuristic").report
    ranked = [c.service for c in report.root_causes] + [a.service for a in report.affected_services]
    return list(dict.fromkeys(ranked))[:3], report.severity, digest.prompt_tokens


def main() -> None:
    data = shared_data_dir()
    model = default_model()
    heuristic = HeuristicAnalyst(BUDGET)
    count = token_counter()
    rng = random.Random(0)
    day = DaySignals(data)
    day.warm()
    faults = fault_bundles(data)
    normal_lines = load_nezha_window(_normal_file(data))
    n0 = min(_ts(x.timestamp) for x in normal_lines)
    n_span = max(_ts(x.timestamp) for x in normal_lines) - n0 + timedelta(seconds=1)
    spans = sorted([(_start(f), SPAN) for f, _ in faults] + [(n0, n_span)])
    signals_at = {start: day.at(start, length) for start, length in spans}  # in time order
    stats: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    raw_tokens = bundle_tokens = 0
    print(
        f"{'fault':21s} {'type':15s} {'injected service':26s} {'lines':>6s} {'fwd':>5s} "
        f"{'evid':>4s} {'top3':>4s} {'+sig':>4s} {'tok':>5s} {'+sig':>5s}  signals"
    )
    for fault, lines in faults:
        svc = fault["inject_pod"].rsplit("-", 2)[0]
        flagged = model.score([x.text for x in lines]) >= model.threshold
        chosen = [
            _event(x, audit=not f)
            for x, f in zip(lines, flagged, strict=True)
            if f or rng.random() < AUDIT_RATE
        ]
        signals = signals_at[_start(fault)]
        bundle = Bundle("trainticket", chosen, filter_version=model.version)
        top3, _sev, tokens = _rank(heuristic, bundle)
        top3s, _sev_s, tokens_s = _rank(heuristic, replace(bundle, signals=signals))
        evidence = any(e.service == svc for e in chosen)
        s = stats[fault["inject_type"]]
        s["n"] += 1
        s["evidence"] += evidence
        for tag, ranked, tok in (("", top3, tokens), ("_sig", top3s, tokens_s)):
            s["top3" + tag] += svc in ranked
            s["top1" + tag] += bool(ranked) and ranked[0] == svc
            s["tokens" + tag] += tok
        raw_tokens += sum(count.count(x.text) for x in lines)
        bundle_tokens += sum(count.count(e.text) for e in chosen)
        about = f"top {top3s[0] if top3s else '-'}; " + ", ".join(
            f"{g.kind}:{g.service}" for g in signals[:3]
        )
        yes = lambda b: "yes" if b else "no"  # noqa: E731
        print(
            f"{fault['inject_time']:21s} {fault['inject_type']:15s} {svc:26s} {len(lines):6d} "
            f"{len(chosen):5d} {yes(evidence):>4s} {yes(svc in top3):>4s} "
            f"{yes(svc in top3s):>4s} {tokens:5d} {tokens_s:5d}  {about}"
        )
    rows = _summary(stats)
    normal = _normal_window(normal_lines, model, heuristic, signals_at[n0])
    print(
        f"\ntokens: raw window lines {raw_tokens:,}; forwarded lines {bundle_tokens:,}; "
        f"lines read for signals {day.lines:,}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"per_type": rows, "fault_free": normal}, indent=2) + "\n")
    print(f"written to {RESULTS}")


def _summary(stats: dict[str, dict[str, float]]) -> list[dict[str, float | str]]:
    """The before/after table per fault type, printed and returned for the JSON file."""
    print(
        f"\n{'fault type':15s} {'faults':>6s} {'evidence':>9s} {'top-1':>6s} {'+sig':>6s} "
        f"{'top-3':>6s} {'+sig':>6s} {'tok/bundle':>10s} {'+sig':>6s}"
    )
    total: dict[str, float] = defaultdict(float)
    rows: list[dict[str, float | str]] = []
    for kind, s in [*sorted(stats.items()), ("all", total)]:
        if kind != "all":
            for k, v in s.items():
                total[k] += v
        n = s["n"]
        row: dict[str, float | str] = {"type": kind, "faults": int(n)}
        for k in ("evidence", "top1", "top1_sig", "top3", "top3_sig"):
            row[k] = round(s[k] / n, 3)
        row["tokens"], row["tokens_sig"] = round(s["tokens"] / n), round(s["tokens_sig"] / n)
        rows.append(row)
        print(
            f"{kind:15s} {int(n):6d} {row['evidence']:9.2f} {row['top1']:6.2f} "
            f"{row['top1_sig']:6.2f} {row['top3']:6.2f} {row['top3_sig']:6.2f} "
            f"{row['tokens']:10.0f} {row['tokens_sig']:6.0f}"
        )
    return rows


def _normal_window(
    normal: list[NezhaLine], model: FilterModel, heuristic: HeuristicAnalyst, signals: list[Signal]
) -> dict[str, object]:
    """The fault-free window: what it raises without and with its signals."""
    nf = model.score([x.text for x in normal]) >= model.threshold
    events = [_event(x) for x, f in zip(normal, nf, strict=True) if f]
    nb = Bundle("trainticket", events)
    _top, severity, _tok = _rank(heuristic, nb)
    _top, severity_s, _tok = _rank(heuristic, replace(nb, signals=signals))
    print(
        f"fault-free window: {len(normal)} lines, {int(nf.sum())} forwarded, heuristic severity "
        f"{severity}, with signals {severity_s} ({len(signals)} signals"
        + (f": {'; '.join(s.text for s in signals[:3])})" if signals else ")")
    )
    return {"lines": len(normal), "forwarded": int(nf.sum()), "severity": severity,
            "severity_sig": severity_s, "signals": [s.text for s in signals]}  # fmt: skip


if __name__ == "__main__":
    main()
