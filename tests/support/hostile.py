"""The checked-in corpus of hostile records (tests/corpus/README.md) and what each must become."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parents[1] / "corpus"


@dataclass(frozen=True)
class Hostile:
    name: str
    raw: bytes
    expect: dict[str, Any]

    @property
    def dead(self) -> bool:
        return bool(self.expect["outcome"] == "dead")


def corpus(folder: Path = CORPUS) -> list[Hostile]:
    """The records of a corpus folder and what each must become (its `expected.json`)."""
    expected: dict[str, dict[str, Any]] = json.loads((folder / "expected.json").read_text())
    files = {p.name for p in folder.iterdir() if p.name.endswith((".bin", ".bin.gz"))}
    assert files == set(expected), f"corpus and expected.json disagree: {files ^ set(expected)}"
    out = []
    for name in sorted(expected):
        raw = (folder / name).read_bytes()
        out.append(Hostile(name, gzip.decompress(raw) if name.endswith(".gz") else raw,
                           expected[name]))  # fmt: skip
    return out


def check_event(h: Hostile, message: str, service: str, ts: str | None) -> None:
    """An event made from `h` is the one expected.json describes."""
    assert h.expect["contains"] in message, (h.name, message[:200])
    if "service" in h.expect:
        assert service == h.expect["service"], h.name
    if "ts" in h.expect:
        assert ts == h.expect["ts"], (h.name, ts)


def otlp_corpus() -> list[Hostile]:
    """tests/corpus/otlp: malformed OTLP requests and what each gives (events, dead letters)."""
    return corpus(CORPUS / "otlp")
