"""Root cause on a Nezha day: logs, spans and metrics through the real pipeline, fault by fault.

    .venv/bin/python -m bench.rca DAY_DIR [--normal NORMAL_DIR] [--no-logs] [--no-traces]
                                  [--no-metrics] [--signals on|off] [--json PATH]

DAY_DIR is a day folder in the layout of `../shared/data/nezha-*/<day>/`: `fault_list.json`,
`HH_MM_log.csv.gz` where the system has logs, `trace/HH_MM_trace.csv.gz`, `metric/*_metric.csv.gz`
(one row a minute per pod, the whole day). NORMAL_DIR holds a fault-free window's
`HH_MM_log.csv.gz` and `HH_MM_trace.csv.gz` (its metrics are in the day's `metric/` files).

The day is replayed as a stream through `sluice.stream.scan` (the filter stage's `screen_batch`
and the analysis stage's `AnalysisState`, as a worker runs them), with the offline analyst
(`HeuristicAnalyst`, the floor an LLM can only improve on): log rows as JSON events, spans as
OTLP/JSON trace requests (what the collector's Kafka exporter writes with `otlp_json`), the pod
metrics as OTLP/JSON gauges, all in event-time order, one minute at a time, the metrics of every
minute of the day (between the fault windows too, as a collector sends them). The baselines
need history: the day is replayed once 24 hours earlier first ("yesterday", its alerts not
counted), as `bench.analyst` does.

Per fault (its window: the injection minute and the two after): the injected service named in
any alert of the window; top-1, the first root cause of the window's highest-severity alert
(ties: the earliest); top-3, the first three services of that alert's ranking. A fault whose
window has no trace file is skipped (counted). The fault-free window: its alerts by severity.
Last line, exactly: `rca: top-1 A/N, top-3 B/N, named C/N, skipped S, fault-free alerts above
warning F`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import json
import math
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from sluice.models.analyst import HeuristicAnalyst
from sluice.models.training.datasets import load_nezha_window
from sluice.stream.filtering.screen import build_filter
from sluice.stream.records import Alert
from sluice.stream.scan import scan
from sluice.stream.settings import PipelineSettings

RESULTS = Path(__file__).resolve().parent / "results"
DAY_S = 86400.0
_RANK = {"info": 0, "warning": 1, "high": 2, "critical": 3}
#: Pod metric columns -> metric names (the node's columns are not the pod's).
_COLUMNS = {
    "CpuUsageRate(%)": "cpu_usage_rate",
    "MemoryUsageRate(%)": "memory_usage_rate",
    "PodClientLatencyP90(s)": "client_latency_p90",
    "PodServerLatencyP90(s)": "server_latency_p90",
    "PodClientLatencyP99(s)": "client_latency_p99",
    "PodServerLatencyP99(s)": "server_latency_p99",
    "PodSuccessRate(%)": "success_rate",
    "PodWorkload(Ops)": "workload",
    "NetworkReceiveBytes": "network_receive_bytes",
    "NetworkTransmitBytes": "network_transmit_bytes",
}
_SPANS_PER_REQUEST = 400

csv.field_size_limit(1 << 30)


def service_of(pod: str) -> str:
    """A pod's service: its name without the two hash segments."""
    return pod.rsplit("-", 2)[0] if pod.count("-") >= 2 else pod


def _attrs(**kv: str) -> list[dict[str, Any]]:
    return [{"key": k, "value": {"stringValue": v}} for k, v in kv.items()]


# -- the day as records ------------------------------------------------------------------------


@dataclass
class Day:
    path: Path
    normal: Path | None
    faults: list[dict[str, str]]
    minutes: dict[int, list[Path]] = field(default_factory=dict)  # epoch minute -> files
    metrics: dict[int, list[tuple[str, dict[str, float]]]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, normal: Path | None) -> Day:
        faults = [
            f for hour in json.loads((path / "fault_list.json").read_text()).values() for f in hour
        ]
        day = cls(path, normal, faults)
        date = datetime.strptime(path.name[:10], "%Y-%m-%d").replace(tzinfo=UTC)
        for folder in (path, path / "trace", *([normal] if normal else [])):
            for p in sorted(folder.glob("*_*_*.csv.gz")):
                hh, mm = p.name[:2], p.name[3:5]
                if hh.isdigit() and mm.isdigit():
                    at = int((date + timedelta(hours=int(hh), minutes=int(mm))).timestamp() // 60)
                    day.minutes.setdefault(at, []).append(p)
        for p in sorted((path / "metric").glob("*_metric.csv.gz")):
            with gzip.open(p, "rt", newline="") as fh:
                for row in csv.DictReader(fh):
                    try:
                        t = float(row["TimeStamp"])
                        values = {
                            name: v
                            for col, name in _COLUMNS.items()
                            if row.get(col) not in (None, "")
                            and math.isfinite(v := float(row[col]))
                        }
                    except (KeyError, ValueError):
                        continue
                    day.metrics.setdefault(int(t // 60), []).append((row["PodName"], values))
        return day

    def traced(self, start: int) -> bool:
        """Whether the window from epoch minute `start` has a trace file."""
        return any(
            p.name.endswith("_trace.csv.gz")
            for m in range(start, start + 3)
            for p in self.minutes.get(m, [])
        )


def _span_rows(path: Path) -> list[dict[str, Any]]:
    out = []
    with gzip.open(path, "rt", newline="") as fh:
        for row in csv.reader(fh):
            if len(row) != 8 or row[0] == "TraceID":
                continue
            tid, sid, parent, pod, op, start, end, _us = row
            try:
                out.append(
                    {
                        "trace": tid,
                        "span": sid,
                        "parent": "" if parent == "root" else parent,
                        "pod": pod,
                        "op": op,
                        "start": int(start),
                        "end": int(end),
                    }
                )
            except ValueError:
                continue
    out.sort(key=lambda s: s["end"])  # as exporters send them: a span when it ends
    return out


def _trace_requests(spans: list[dict[str, Any]], shift_ns: int) -> Iterator[tuple[int, bytes]]:
    """OTLP/JSON trace requests, each a run of spans grouped by pod (resource)."""
    for i in range(0, len(spans), _SPANS_PER_REQUEST):
        chunk = spans[i : i + _SPANS_PER_REQUEST]
        by_pod: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for s in chunk:
            by_pod[s["pod"]].append(
                {
                    "traceId": s["trace"],
                    "spanId": s["span"],
                    "parentSpanId": s["parent"],
                    "name": s["op"],
                    "startTimeUnixNano": str(s["start"] + shift_ns),
                    "endTimeUnixNano": str(s["end"] + shift_ns),
                }
            )
        request = {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": _attrs(
                            **{"service.name": service_of(pod), "k8s.pod.name": pod}
                        )
                    },
                    "scopeSpans": [{"spans": items}],
                }
                for pod, items in by_pod.items()
            ]
        }
        yield chunk[-1]["end"] + shift_ns, orjson.dumps(request)


def _metric_request(rows: list[tuple[str, dict[str, float]]], minute: int, shift: float) -> bytes:
    t = str(int((minute * 60 + 30 + shift) * 1e9))
    return orjson.dumps(
        {
            "resourceMetrics": [
                {
                    "resource": {
                        "attributes": _attrs(
                            **{"service.name": service_of(pod), "k8s.pod.name": pod}
                        )
                    },
                    "scopeMetrics": [
                        {
                            "metrics": [
                                {
                                    "name": name,
                                    "gauge": {"dataPoints": [{"timeUnixNano": t, "asDouble": v}]},
                                }
                                for name, v in values.items()
                            ]
                        }
                    ],
                }
                for pod, values in rows
            ]
        }
    )


def _log_events(path: Path, shift: float) -> list[tuple[float, bytes]]:
    out = []
    for x in load_nezha_window(path):
        at = datetime.fromisoformat(x.timestamp[:26].rstrip("Z") + "+00:00").timestamp() + shift
        out.append(
            (
                at,
                orjson.dumps(
                    {
                        "ts": datetime.fromtimestamp(at, UTC).isoformat(),
                        "service": x.service,
                        "level": x.level,
                        "message": x.text,
                        "trace_id": x.trace_id or None,
                        "span_id": x.span_id or None,
                    }
                ),
            )
        )
    return out


def records(
    day: Day, shift: float, logs: bool, traces: bool, metrics: bool
) -> Iterator[tuple[bytes, None, str]]:
    """The day in event-time order, a minute at a time: metrics, then spans and logs merged."""
    for minute in sorted(day.minutes.keys() | (day.metrics.keys() if metrics else set())):
        if metrics and minute in day.metrics:
            yield _metric_request(day.metrics[minute], minute, shift), None, f"metrics:{minute}"
        timed: list[tuple[float, bytes]] = []
        for p in day.minutes.get(minute, []):
            if traces and p.name.endswith("_trace.csv.gz"):
                for end_ns, raw in _trace_requests(_span_rows(p), int(shift * 1e9)):
                    timed.append((end_ns / 1e9, raw))
            elif logs and p.name.endswith("_log.csv.gz"):
                timed += _log_events(p, shift)
        timed.sort(key=lambda x: x[0])
        for n, (_t, raw) in enumerate(timed):
            yield raw, None, f"{minute}:{n}"


# -- scoring -----------------------------------------------------------------------------------


def _window(alerts: list[Alert], start: float, end: float) -> list[Alert]:
    out = []
    for a in alerts:
        r = a.report
        first = r.first_seen.timestamp() if r.first_seen else None
        last = r.last_seen.timestamp() if r.last_seen else first
        if first is not None and last is not None and first < end and last >= start:
            out.append(a)
    return out


def _top(alerts: list[Alert]) -> Alert | None:
    firing = [a for a in alerts if a.report.severity != "info"]
    if not firing:
        return None
    return max(
        firing,
        key=lambda a: (
            _RANK[a.report.severity],
            -(a.report.first_seen or a.generated_at).timestamp(),
        ),
    )


def _ranking(a: Alert) -> list[str]:
    r = a.report
    return list(
        dict.fromkeys([c.service for c in r.root_causes] + [s.service for s in r.affected_services])
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    day = Day.load(Path(args.day), Path(args.normal) if args.normal else None)
    cfg = PipelineSettings.model_validate(
        {"signals": {"enabled": args.signals == "on"}, "scope": "nezha", "batch_size": 100}
    )
    filt = build_filter(cfg)
    analyst = HeuristicAnalyst(6000)
    clock = [datetime(2000, 1, 1, tzinfo=UTC)]

    def stream() -> Iterator[tuple[bytes, None, str]]:
        yield from records(day, -DAY_S, args.logs, args.traces, args.metrics)  # "yesterday"
        yield from records(day, 0.0, args.logs, args.traces, args.metrics)

    got = await scan(stream(), cfg, filt, analyst, lambda: clock[0], wall=lambda: 0.0)
    alerts = [a for a in got.alerts if a.report.first_seen is not None]
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    rows = []
    for f in day.faults:
        t = datetime.strptime(f["inject_time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        start = int(t.timestamp() // 60)
        kind, truth = f["inject_type"], service_of(f["inject_pod"])
        c = by_type[kind]
        c["faults"] += 1
        if not day.traced(start):
            c["skipped"] += 1
            rows.append({"time": f["inject_time"], "type": kind, "service": truth, "skipped": True})
            continue
        inside = _window(alerts, start * 60.0, (start + 3) * 60.0)
        top = _top(inside)
        ranking = _ranking(top) if top else []
        named = any(truth in a.services() for a in inside if a.report.severity != "info")
        c["scored"] += 1
        c["top1"] += ranking[:1] == [truth]
        c["top3"] += truth in ranking[:3]
        c["named"] += named
        rows.append(
            {
                "time": f["inject_time"],
                "type": kind,
                "service": truth,
                "top": ranking[:3],
                "severity": top.report.severity if top else None,
                "named": named,
            }
        )
        print(
            f"{f['inject_time']}  {kind:15s} {truth:32s} "
            f"{'ok ' if ranking[:1] == [truth] else '-- '}"
            f"{', '.join(ranking[:3]) or '(no alert)'}"
            f"  [{top.report.severity if top else '-'}]"
        )
    normal: Counter[str] = Counter()
    if day.normal is not None:
        mins = sorted(
            {m for m, ps in day.minutes.items() if any(p.parent == day.normal for p in ps)}
        )
        if mins:
            for a in _window(alerts, mins[0] * 60.0, (mins[-1] + 1) * 60.0):
                normal[a.report.severity] += 1
    total = Counter[str]()
    print(
        f"\n{'fault type':16s} {'faults':>6s} {'scored':>6s} {'top-1':>6s} {'top-3':>6s} "
        f"{'named':>6s}"
    )
    for kind, c in sorted(by_type.items()):
        total.update(c)
        print(
            f"{kind:16s} {c['faults']:6d} {c['scored']:6d} {c['top1']:6d} {c['top3']:6d} "
            f"{c['named']:6d}"
        )
    above = sum(n for s, n in normal.items() if _RANK[s] > _RANK["warning"])
    if day.normal is not None:
        print(f"fault-free window: {dict(normal) or 'no alerts'}")
    seconds = time.perf_counter() - started
    items = got.counters.otlp_items
    print(
        f"{got.events} events, {items['traces']} spans, {items['metrics']} metric points, "
        f"{len(got.alerts)} alerts in {seconds:.0f} s (twice: yesterday, then the day)"
    )
    n = total["scored"]
    return {
        "day": str(day.path),
        "config": {
            "logs": args.logs,
            "traces": args.traces,
            "metrics": args.metrics,
            "signals": args.signals,
        },
        "by_type": {k: dict(v) for k, v in by_type.items()},
        "faults": rows,
        "fault_free": dict(normal),
        "summary": (
            f"rca: top-1 {total['top1']}/{n}, top-3 {total['top3']}/{n}, named "
            f"{total['named']}/{n}, skipped {total['skipped']}, fault-free alerts above "
            f"warning {above}"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("day", help="a day folder: fault_list.json, trace/, metric/, logs")
    ap.add_argument("--normal", help="a fault-free window's folder (its logs and traces)")
    ap.add_argument("--no-logs", dest="logs", action="store_false")
    ap.add_argument("--no-traces", dest="traces", action="store_false")
    ap.add_argument("--no-metrics", dest="metrics", action="store_false")
    ap.add_argument(
        "--signals",
        choices=("on", "off"),
        default="off",
        help="the line signals (silences, missing steps, ...); default off",
    )
    ap.add_argument("--json", help="write the figures here (default bench/results/rca-DAY.json)")
    args = ap.parse_args(argv)
    out = asyncio.run(run(args))
    path = Path(args.json) if args.json else RESULTS / f"rca-{Path(args.day).parent.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(out["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
