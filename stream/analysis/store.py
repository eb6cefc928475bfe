"""Where the analysis state lives: bytes by key, in a dict (`scan`, tests) or a Faust table
(the worker), with writes held back until a record's effects are acknowledged (`StagedStore`),
and the parsed forms of large values kept by their bytes (`ChunkCache`)."""

from __future__ import annotations

from typing import Protocol

from sluice.stream.analysis.state import load_chunk
from sluice.stream.records import Suspect
from sluice.stream.settings import SignalSettings
from sluice.stream.signals.codec import load_detector
from sluice.stream.signals.detector import SignalDetector

__all__ = ["ChunkCache", "MemoryStore", "StagedStore", "StateStore"]

#: Parsed signal detectors a cache keeps (one per live scope is what is used).
_MAX_DETECTORS = 64


class StateStore(Protocol):
    """Where the analysis state lives: bytes by key."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> None: ...


class MemoryStore:
    """A StateStore in a dict (scan, tests)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class StagedStore:
    """Writes held back until `apply()`: the worker publishes alerts before the state says so."""

    def __init__(self, inner: StateStore) -> None:
        self._inner = inner
        self._staged: dict[str, bytes | None] = {}

    def get(self, key: str) -> bytes | None:
        if key in self._staged:
            return self._staged[key]
        return self._inner.get(key)

    def put(self, key: str, value: bytes) -> None:
        self._staged[key] = value

    def delete(self, key: str) -> None:
        self._staged[key] = None

    def commit(self) -> None:
        for key, value in self._staged.items():
            if value is None:
                self._inner.delete(key)
            else:
                self._inner.put(key, value)
        self._staged.clear()


class ChunkCache:
    """Parsed forms of stored values (suspects of chunks, signal detectors of scopes), keyed by
    the stored bytes themselves.

    Equal bytes are equal content, so an entry can never be stale; a value written by this
    process is never parsed back, one restored from the changelog is parsed once. Bounded: the
    oldest entries go first (a miss costs a parse, never a wrong answer).
    """

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self._entries: dict[bytes, list[Suspect]] = {}
        self._detectors: dict[bytes, SignalDetector] = {}
        self._bytes = 0
        self._max = max_bytes

    def put(self, raw: bytes, suspects: list[Suspect]) -> None:
        if raw in self._entries:
            return
        while self._entries and self._bytes + len(raw) > self._max:
            self._bytes -= len(next(iter(self._entries)))
            del self._entries[next(iter(self._entries))]
        self._entries[raw] = suspects
        self._bytes += len(raw)

    def get(self, key: str, raw: bytes) -> list[Suspect]:
        got = self._entries.get(raw)
        if got is None:
            got = load_chunk(key, raw)
            self.put(raw, got)
        return got

    def drop(self, raw: bytes) -> None:
        if self._entries.pop(raw, None) is not None:
            self._bytes -= len(raw)

    def detector(
        self, key: str, raw: bytes | None, cfg: SignalSettings, take: bool = False
    ) -> SignalDetector:
        """The signal detector a scope's stored bytes hold, parsed once (a load costs as much as
        the counting it keeps). `take` removes it from the cache: the caller changes it, and the
        bytes it came from no longer describe it (it keeps the new ones with `keep_detector`)."""
        if raw is None:
            return SignalDetector(cfg)
        got = self._detectors.pop(raw, None) if take else self._detectors.get(raw)
        if got is None:
            got = load_detector(raw, cfg, key)
            if not take:
                self.keep_detector(raw, got)
        return got

    def keep_detector(self, raw: bytes, detector: SignalDetector) -> None:
        while len(self._detectors) >= _MAX_DETECTORS:
            del self._detectors[next(iter(self._detectors))]
        self._detectors[raw] = detector
