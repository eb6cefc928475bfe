"""Text normalization shared by training and inference: mask the variable parts of a log line.

A line's *template* is computed in two stages, ``normalize = rules(mask(x))``:

1. ``mask`` (K): ASCII lower-case; a word (ASCII letters, digits, ``_``) made only of hex
   characters that contains a digit (ids, hashes, UUID groups, plain numbers) becomes ``1``; any
   other run of digits becomes ``1``.
2. ``rules`` (N2): on that reduced text, shapes become placeholders:
   ``1-1-1-1-1`` → ``<uuid>``,
   ``1.1.1.1:1`` → ``<ip>``, dates and times → ``<ts>``, ``blk_-1`` → ``<blk>``,
   URLs → ``<url>``, paths → ``<path>``, ``1x1f1a`` → ``<hex>``, every remaining ``1`` → ``<num>``;
   whitespace collapses.

Why two stages: K treats every digit alike, so ``K(x) == K(cache_key(x))`` where ``cache_key`` is a
plain ``bytes.translate`` (lower-case, every digit to ``1``), which runs at C speed over a whole
batch. A cache keyed by ``cache_key`` is therefore exact, not approximate, and the expensive regex
rules run only for lines whose key was not seen before, and N2 is memoized on K's output (logs with
a fresh trace id per line still share a few hundred masked forms). Placeholders are lower-case and
digit-free, which makes normalization idempotent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

__all__ = [
    "MAX_LINE_CHARS",
    "NORMALIZER_VERSION",
    "cache_keys",
    "decode_line",
    "normalize",
    "normalize_batch",
    "prepare",
    "template_of_key",
]

#: Bump when the masking rules change: a model records the version it was trained with.
NORMALIZER_VERSION = 2

#: Lines are cut to this many characters before anything else (a 1 MB line costs what 2 KB does).
MAX_LINE_CHARS = 2048

_KEY_TABLE = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0234567890", b"abcdefghijklmnopqrstuvwxyz1111111111"
)
# K, on a cache key (where every digit is already '1'): a whole word of hex characters holding a
# digit, or else any run of digits. Possessive, so a long hex-looking word costs one pass.
_MASK = re.compile(rb"\b(?=[a-f1]*1)[a-f1]++\b|1+")
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?<![\w-])1-1-1-1-1(?![\w-])"), "<uuid>"),
    (re.compile(r"(?<![\w.-])1\.1\.1\.1(?::1)?(?![\w.])"), "<ip>"),
    (
        re.compile(
            r"(?<![\w.])1[-./]1[-./]1(?:[-t ]1[:.]1[:.]1(?:[.,]1)?)?(?:z|[+-]1(?::1)?)?(?![\w.])"
        ),
        "<ts>",
    ),
    (re.compile(r"(?<![\w.])1:1:1(?:[.,]1)?(?![\w.])"), "<ts>"),
    (re.compile(r"blk_-?1\b"), "<blk>"),
    (re.compile(r"\b[a-z][a-z1+.-]*://[^\s\"'<>]+"), "<url>"),
    (re.compile(r"(?<![\w<>/])(?:/[\w.$-]+){2,}/?|(?<=[\s=:\[(])/[\w.$-]+"), "<path>"),
    (re.compile(r"\b1x1?[a-f1]+\b"), "<hex>"),
]
_SPACE = re.compile(r"\s+")


def decode_line(raw: bytes) -> str:
    """Bytes from the wire to text: invalid UTF-8 is replaced (U+FFFD), never an error."""
    return raw.decode("utf-8", errors="replace")


def prepare(line: str) -> str:
    """Truncate to MAX_LINE_CHARS and fold line breaks: the form every line has before masking."""
    if len(line) > MAX_LINE_CHARS:
        line = line[:MAX_LINE_CHARS]
    if "\n" in line or "\r" in line:
        line = line.replace("\r", " ").replace("\n", " ")
    return line


def cache_keys(lines: Sequence[str]) -> list[bytes]:
    """One exact cache key per line (see the module docstring), computed for the batch at once."""
    if not lines:
        return []
    joined = "\n".join(lines)
    folded = joined.count("\n") != len(lines) - 1 or "\r" in joined
    if folded or (len(joined) > MAX_LINE_CHARS and max(map(len, lines)) > MAX_LINE_CHARS):
        joined = "\n".join(map(prepare, lines))
    return joined.encode("utf-8", errors="replace").translate(_KEY_TABLE).split(b"\n")


def template_of_key(key: bytes) -> str:
    """The template of a line, from its cache key."""
    return _template_of_masked(_MASK.sub(b"1", key))


@lru_cache(maxsize=65536)
def _template_of_masked(masked: bytes) -> str:
    text = masked.decode("utf-8", errors="replace")
    for pattern, placeholder in _RULES:
        text = pattern.sub(placeholder, text)
    return _SPACE.sub(" ", text.replace("1", "<num>")).strip()


def normalize(line: str) -> str:
    """The template of one line."""
    return template_of_key(cache_keys([line])[0])


def normalize_batch(lines: Sequence[str]) -> list[str]:
    """normalize() of each line; each distinct cache key is worked out once."""
    keys = cache_keys(lines)
    memo: dict[bytes, str] = {}
    out: list[str] = []
    for k in keys:
        t = memo.get(k)
        if t is None:
            t = memo[k] = template_of_key(k)
        out.append(t)
    return out
