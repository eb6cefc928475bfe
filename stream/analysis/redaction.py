"""Redaction: secrets and personal data in log text are replaced before they leave for the LLM.

Logs carry bearer tokens, API keys, passwords in URLs, emails and card numbers. The analysis
stage replaces them with typed placeholders (`<secret:bearer>`, `<email>`) in every text that
leaves Sluice's own topics: the bundle that becomes a prompt, and the examples and templates
written to `feedback`. The filter stage never redacts: it scores the raw line, and a placeholder
is the same for every value, so template grouping still groups the lines it grouped before.

Built-in patterns cover the common shapes; `pipeline.redact_patterns` adds a user's own
(name -> regular expression, replaced by `<name>`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

#: systemd's unit types: `name@instance.service` is a unit, not an e-mail address.
_UNIT_TYPES = "service|socket|target|timer|mount|automount|device|path|slice|scope|swap"

__all__ = ["BUILTIN_PATTERNS", "Redactor"]


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")

#: name -> (pattern, replacement). Replacements keep the harmless part (the scheme, the key name)
#: so the analyst still sees that a credential was there. Order matters: the most specific first.
BUILTIN_PATTERNS: dict[str, tuple[str, str]] = {
    "jwt": (r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", "<secret:jwt>"),
    "bearer": (r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}", r"\1 <secret:bearer>"),
    "url_credentials": (
        r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@",
        r"\1<secret:url_credentials>@",
    ),
    "api_key": (
        r"\b(?:sk|pk|rk)[-_](?:live[-_]|test[-_]|proj[-_])?[A-Za-z0-9_-]{16,}"
        r"|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{36}\b|\bxox[abposr]-[A-Za-z0-9-]{10,}",
        "<secret:api_key>",
    ),
    "credential": (
        r"(?i)(?<!<)\b(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|client[_-]?secret)"
        r"""(["']?\s*[:=]\s*["']?)(?!<)[^\s"'&,;<]+""",
        r"\1\2<secret:credential>",
    ),
    # not a systemd unit's instance (`postgresql@15-main.service`, `getty@tty1.service`)
    "email": (
        r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?!(?:" + _UNIT_TYPES + r")\b)"
        r"[A-Za-z]{2,}\b",
        "<email>",
    ),
}


@dataclass
class Redactor:
    """Replaces secrets and personal data; counts what it replaced, by placeholder name."""

    extra: Mapping[str, str] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        rules: list[tuple[str, re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
            (name, re.compile(p), r) for name, (p, r) in BUILTIN_PATTERNS.items()
        ]
        rules += [(name, re.compile(p), f"<{name}>") for name, p in self.extra.items()]
        self._rules = rules

    def __call__(self, text: str) -> str:
        for name, pattern, replacement in self._rules:
            text, n = pattern.subn(replacement, text)
            if n:
                self.counts[name] += n
        return _CARD.sub(self._card, text)

    def _card(self, m: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", m.group(0))
        if 13 <= len(digits) <= 19 and _luhn(digits):
            self.counts["card"] += 1
            return "<card>"
        return m.group(0)
