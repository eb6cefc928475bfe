"""Loaders for the labeled public logs in ../shared/data (training the default model, benchmarks).

Nothing here ships data: the files are read from the shared data directory at call time.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sluice.models.filter._normalize import normalize_batch

__all__ = [
    "UNLABELED_LOGHUB",
    "WEAK_LOGHUB",
    "BglLines",
    "HdfsLines",
    "NezhaLine",
    "WeakLines",
    "load_bgl",
    "load_hdfs",
    "load_loghub",
    "load_nezha_window",
    "nezha_windows",
    "shared_data_dir",
    "template_cover",
]


def shared_data_dir() -> Path:
    """SLUICE_DATA_DIR, else ../shared/data beside the project checkout."""
    env = os.environ.get("SLUICE_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass(frozen=True)
class BglLines:
    texts: list[str]
    labels: np.ndarray  # bool per line: alert category present


@dataclass(frozen=True)
class HdfsLines:
    texts: list[str]
    blocks: list[str]  # block id per line
    block_anomalous: dict[str, bool]


def as_served(lines: Iterable[str], source: str) -> list[str]:
    """What a worker or `sluice scan` scores of these text lines: the message after their
    format's header is read (`sluice.stream.ingest.textformats`: no time, host or pid, the level and
    program in front). The default model is trained on the raw lines (see the README: trained
    on these it leaned on the level and missed more failures of unseen software)."""
    from sluice.stream.ingest.parsing import parse_batch
    from sluice.stream.ingest.textformats import TextFormats

    values = [line.encode("utf-8", "replace") for line in lines]
    return parse_batch(values, 1 << 30, TextFormats(), [source] * len(values)).messages


def load_bgl(data_dir: Path | None = None) -> BglLines:
    """BGL_2k with the label token (first field: '-' normal, else the alert category) removed."""
    path = (data_dir or shared_data_dir()) / "loghub" / "BGL" / "BGL_2k.log"
    texts, labels = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            label, _, text = line.rstrip("\n").partition(" ")
            texts.append(text)
            labels.append(label != "-")
    return BglLines(texts, np.array(labels, dtype=bool))


def load_hdfs(data_dir: Path | None = None) -> HdfsLines:
    """HDFS lines rebuilt in loghub's raw format, with their block ids and block labels."""
    import pyarrow.parquet as pq

    base = (data_dir or shared_data_dir()) / "hdfs-2pct"
    ev = pq.read_table(base / "hdfs_events_2percent.parquet").to_pydict()
    texts = [
        f"{d} {t} {i} {lv} {c} {m}"
        for d, t, i, lv, c, m in zip(
            ev["date"],
            ev["time"],
            ev["id"],
            ev["level"],
            ev["component"],
            ev["m_message"],
            strict=True,
        )
    ]
    seqs = pq.read_table(base / "hdfs_seqs_2percent.parquet").to_pydict()
    labels = dict(zip(seqs["seq_id"], map(bool, seqs["anomaly"]), strict=True))
    return HdfsLines(texts, list(ev["seq_id"]), labels)


def template_cover(
    texts: Iterable[str], blocks: Iterable[str], anomalous: dict[str, bool], target: float
) -> set[str]:
    """Templates a line filter must forward so that `target` of anomalous blocks show a line.

    HDFS labels blocks, not lines. A line is labeled positive when its template is chosen by a
    greedy cover: repeatedly take the template that reaches the most not-yet-covered anomalous
    blocks per line it would forward, until `target` of them are covered. Templates specific to
    anomalies (exceptions, redundant requests) come first; blocks whose anomaly shows only in
    sequence or counts are reached last, through a template every block has.
    """
    texts, blocks = list(texts), list(blocks)
    templates = normalize_batch(texts)
    lines_per = Counter(templates)
    reach: dict[str, set[str]] = defaultdict(set)
    for t, b in zip(templates, blocks, strict=True):
        if anomalous.get(b):
            reach[t].add(b)
    todo = {b for b in set(blocks) if anomalous.get(b)}
    need = len(todo) * (1 - target)
    chosen: set[str] = set()
    while len(todo) > need and reach:
        best = max(reach, key=lambda t: (len(reach[t] & todo) / lines_per[t], -lines_per[t]))
        if not reach[best] & todo:
            break
        todo -= reach.pop(best)
        chosen.add(best)
    return chosen


@dataclass(frozen=True)
class NezhaLine:
    """One Train-Ticket log line: the service (pod name without its hash segments) and the text."""

    timestamp: str
    service: str
    pod: str
    trace_id: str
    span_id: str
    text: str

    @property
    def level(self) -> str:
        m = _NEZHA_LEVEL.match(self.text)
        return m.group(1) if m else ""


_NEZHA_LEVEL = re.compile(r"\S+\s+([A-Z]+)\s")


def nezha_windows(data_dir: Path | None = None) -> list[Path]:
    """The fault windows of 2023-01-29 in time order (the normal window is not included)."""
    base = (data_dir or shared_data_dir()) / "nezha-trainticket" / "2023-01-29"
    return sorted(base.glob("*_log.csv.gz"))


def load_nezha_window(path: Path, bad: list[str] | None = None) -> list[NezhaLine]:
    """Rows of one window; malformed rows are reported into `bad` (never silently dropped)."""
    out: list[NezhaLine] = []
    with gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="") as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            try:
                text = json.loads(row["Log"])["log"].rstrip("\n")
                pod = row["PodName"]
            except (KeyError, TypeError, ValueError) as exc:
                if bad is not None:
                    bad.append(f"{path.name}:{n}: {type(exc).__name__}: {exc}")
                continue
            service = pod.rsplit("-", 2)[0] if pod.count("-") >= 2 else pod
            out.append(
                NezhaLine(row["Timestamp"], service, pod, row["TraceID"], row["SpanID"], text)
            )
    return out


#: loghub systems whose structured CSV has a severity column, and the column.
_WEAK_LEVEL_COLUMN = {
    "Android": "Level",
    "Apache": "Level",
    "Hadoop": "Level",
    "OpenStack": "Level",
    "Spark": "Level",
    "Windows": "Level",
    "Zookeeper": "Level",
}
_POSITIVE_LEVELS = frozenset({"e", "f", "error", "err", "fatal", "critical", "crit", "severe"})
_UNDECIDED_LEVELS = frozenset({"w", "warn", "warning"})
#: loghub systems with no severity at all: background of very different formats, unlabeled.
UNLABELED_LOGHUB = ("HDFS", "HPC", "HealthApp", "Linux", "Mac", "OpenSSH", "Proxifier")
WEAK_LOGHUB = (*sorted(_WEAK_LEVEL_COLUMN), "Thunderbird")


@dataclass(frozen=True)
class WeakLines:
    """Raw lines of one loghub system with a weak label each: 1 relevant, 0 not, -1 unknown."""

    system: str
    texts: list[str]
    labels: np.ndarray  # int8


def load_loghub(system: str, data_dir: Path | None = None) -> WeakLines:
    """The raw lines of a loghub system with weak labels from its own severity.

    The rule, for the systems with a severity column: ERROR, FATAL, CRITICAL, SEVERE (and
    Android's E and F, Apache's `error`) are relevant; WARN is left unknown (warnings are both);
    every other level is not relevant. Thunderbird labels its lines as BGL does (`-`: normal).
    The systems in UNLABELED_LOGHUB have no severity: every line is unknown.
    """
    base = (data_dir or shared_data_dir()) / "loghub" / system
    with open(base / f"{system}_2k.log", encoding="utf-8", errors="replace") as fh:
        raw = [line.rstrip("\n") for line in fh]
    labels = np.full(len(raw), -1, dtype=np.int8)
    if system == "Thunderbird":
        texts = []
        for i, line in enumerate(raw):
            label, _, text = line.partition(" ")
            texts.append(text)
            labels[i] = label != "-"
        return WeakLines(system, texts, labels)
    column = _WEAK_LEVEL_COLUMN.get(system)
    if column is not None:
        with open(
            base / f"{system}_2k.log_structured.csv", encoding="utf-8", errors="replace"
        ) as fh:
            for row in csv.DictReader(fh):
                i = int(row["LineId"]) - 1
                level = row[column].strip().lower()
                if 0 <= i < len(raw) and level not in _UNDECIDED_LEVELS:
                    labels[i] = level in _POSITIVE_LEVELS
    return WeakLines(system, raw, labels)
