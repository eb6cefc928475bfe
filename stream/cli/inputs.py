"""What `sluice scan` and `sluice produce` read: FILE or the bundled demo, checked before a
batch is read (one clear line for a directory, a missing, unreadable or binary file), and how
the scan's alerts are counted for people."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

__all__ = ["DEMO_FILE", "alerts_said", "check_readable", "input_file"]

#: The demo excerpt in the package `sluice.stream.demo` (`sluice scan --demo`, `make demo`).
DEMO_FILE = "trainticket-contacts-fault.jsonl.gz"


def input_file(file: str | None, demo: bool) -> str:
    """FILE, or the bundled demo excerpt's path in the installed package (--demo)."""
    if demo:
        from importlib import resources

        return str(resources.files("sluice.stream.demo").joinpath(DEMO_FILE))
    if file is None:
        raise click.UsageError("give FILE (or - for stdin), or --demo")
    return file


def alerts_said(alerts: Sequence[Any]) -> str:
    """`1 alert (3 revisions)`: an alert is a fingerprint; each change of it is a revision."""
    n = len({a.fingerprint for a in alerts})
    said = f"{n} alert{'s' if n != 1 else ''}"
    return said + (f" ({len(alerts)} revisions)" if len(alerts) > n else "")


#: Bytes of a file looked at to tell a log from a binary file.
_SNIFF_BYTES = 8192


def check_readable(file: str) -> None:
    """One clear line, no traceback, for what `scan` cannot read: a missing file, a directory,
    one without permission, a binary file (an executable, an image; gzip is read)."""
    path = Path(file)
    if path.is_dir():
        raise click.ClickException(f"{file} is a directory: give a log file (or - for stdin)")
    if not path.exists():
        raise click.ClickException(f"{file}: no such file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise click.ClickException(f"{file}: cannot read it ({exc.strerror})") from None
    if file.endswith(".gz") and head[:2] == b"\x1f\x8b":
        return
    if _mostly_not_text(head):  # (a stray NUL, as a truncated log has, is still a log)
        raise click.ClickException(
            f"{file} is a binary file, not a log: refused (Sluice reads text, JSON or OTLP lines; "
            "a .gz file is unpacked)"
        )


def _mostly_not_text(head: bytes) -> bool:
    """More than a quarter of the characters are neither text nor valid UTF-8 (a log in Latin-1
    with accents, or with a run of NULs, passes; an executable, an image or an archive does
    not)."""
    text = head.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") + sum(1 for c in text if c < " " and c not in "\t\r\n\f\x1b")
    return bad > max(8, len(text) // 4)
