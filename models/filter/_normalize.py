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

Why two stages: the template is a function of K's output, so K's output is an exact cache key
(not an approximate one): the expensive rules run once per masked form, and logs with a fresh
trace id on every line still share a few hundred of them. K runs over a whole batch at once
(`mask_batch`): a ``bytes.translate`` of the joined batch (lower-case, every digit to ``1``; K
treats every digit alike, so K(x) == K(translate(x))), then K once per distinct translated line:
with Python's ``re`` when they are few, with pyarrow's RE2 over all of them at once when every
line is new (a trace id in each: 4.7 µs a Nezha line where Python's ``re`` took 15, measured;
the same result, which a property test holds them to). Placeholders are lower-case and
digit-free, which makes normalization idempotent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_LINE_CHARS",
    "NORMALIZER_VERSION",
    "cache_keys",
    "decode_line",
    "mask_batch",
    "normalize",
    "normalize_batch",
    "prepare",
    "template_of_key",
    "template_of_masked",
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


#: K for RE2 (no lookahead, no possessive), on translated keys: the same words.
_MASK_RE2 = r"\b[a-f1]*1[a-f1]*\b|1+"
#: Distinct keys in a batch from which RE2 masks them (below it, Python's `re` costs less than
#: the round trip through Arrow).
_ARROW_FROM = 256


def mask_batch(lines: Sequence[str]) -> tuple[list[bytes], npt.NDArray[np.intp]]:
    """K of every line, as its distinct masked forms and each line's index into them."""
    if not lines:
        return [], np.zeros(0, dtype=np.intp)
    joined = "\n".join(lines)
    folded = joined.count("\n") != len(lines) - 1 or "\r" in joined
    if folded or (len(joined) > MAX_LINE_CHARS and max(map(len, lines)) > MAX_LINE_CHARS):
        joined = "\n".join(map(prepare, lines))
    keys = joined.encode("utf-8", errors="replace").translate(_KEY_TABLE).split(b"\n")
    distinct = list(dict.fromkeys(keys))  # per line, only C-level loops from here
    position = dict(zip(distinct, range(len(distinct)), strict=True))
    at = np.fromiter(map(position.__getitem__, keys), dtype=np.intp, count=len(keys))
    masked = _mask(distinct)
    forms = list(dict.fromkeys(masked))
    form_of = dict(zip(forms, range(len(forms)), strict=True))
    remap = np.fromiter(map(form_of.__getitem__, masked), dtype=np.intp, count=len(masked))
    return forms, remap[at]


#: K of translated keys seen lately (a replayed or repetitive stream masks each line once;
#: lines with a fresh id each never hit it). 20,000 keys of up to 2 KB, twice: 80 MB at worst.
_MASKED: dict[bytes, bytes] = {}
_MASKED_MAX = 20_000


def _mask(keys: list[bytes]) -> list[bytes]:
    """K of distinct translated keys, from the cache or worked out for those not in it."""
    out = list(map(_MASKED.get, keys))
    missing = [i for i, m in enumerate(out) if m is None]
    if missing:
        fresh = [keys[i] for i in missing]
        masked = _mask_new(fresh)
        if len(_MASKED) + len(fresh) > _MASKED_MAX:
            _MASKED.clear()
        _MASKED.update(zip(fresh, masked, strict=True))
        for i, m in zip(missing, masked, strict=True):
            out[i] = m
    return out  # type: ignore[return-value]


def _mask_new(keys: list[bytes]) -> list[bytes]:
    """K of keys not seen lately: RE2 over them at once when there are many (a fresh trace id
    on every line), else Python's `re` one by one."""
    if len(keys) >= _ARROW_FROM:
        try:
            import pyarrow as pa
            import pyarrow.compute as pc
        except ImportError:  # pragma: no cover - a dependency; the same result without it
            pass
        else:
            try:
                arr = pc.replace_substring_regex(pa.array(keys, pa.binary()), _MASK_RE2, "1")
                return arr.to_pylist()  # type: ignore[no-any-return]
            except pa.ArrowException:  # pragma: no cover - never seen; Python's `re` agrees
                pass
    return [_MASK.sub(b"1", k) for k in keys]


def cache_keys(lines: Sequence[str]) -> list[bytes]:
    """One exact cache key per line: its masked form (see the module docstring)."""
    forms, index = mask_batch(lines)
    return list(map(forms.__getitem__, index.tolist()))


def template_of_key(key: bytes) -> str:
    """The template of a line, from its cache key (K is idempotent: a key masks to itself)."""
    return template_of_masked(_MASK.sub(b"1", key))


@lru_cache(maxsize=65536)
def template_of_masked(masked: bytes) -> str:
    """The template of a line, from K's output (`mask_batch`'s forms)."""
    text = masked.decode("utf-8", errors="replace")
    for pattern, placeholder in _RULES:
        text = pattern.sub(placeholder, text)
    return _SPACE.sub(" ", text.replace("1", "<num>")).strip()


def normalize(line: str) -> str:
    """The template of one line."""
    return template_of_key(cache_keys([line])[0])


def normalize_batch(lines: Sequence[str]) -> list[str]:
    """normalize() of each line; each distinct masked form is worked out once."""
    forms, index = mask_batch(lines)
    templates = [template_of_masked(f) for f in forms]
    return list(map(templates.__getitem__, index.tolist()))
