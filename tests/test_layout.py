"""The README's layout table and the tree agree: every package and module of `stream/` is named
in it, every path it names exists, and no module is long without saying why at its top."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
LAYOUT = README[README.index("### Layout") : README.index("### Development")]
NAMED = set(re.findall(r"`((?:stream|models|deploy|tests|bench|docs)/[^`]*)`", LAYOUT))

#: Longer than this, a module says at its top why it is not split.
LONG_MODULE = 500


def test_every_stage_package_and_module_of_stream_is_in_the_layout() -> None:
    tree = {
        f"stream/{p.name}/" if p.is_dir() else f"stream/{p.name}"
        for p in (ROOT / "stream").iterdir()
        if not p.name.startswith("__") and (p.is_dir() or p.suffix == ".py")
    }
    assert tree - NAMED == set(), "in the tree but not in the README's layout"


def test_every_path_the_layout_names_exists() -> None:
    missing = [p for p in NAMED if not (ROOT / p.rstrip("/")).exists()]
    assert missing == []


def test_long_modules_say_why_at_their_top() -> None:
    long = []
    for path in [*(ROOT / "stream").rglob("*.py"), *(ROOT / "models").rglob("*.py")]:
        text = path.read_text()
        if text.count("\n") > LONG_MODULE and "Why one module" not in text[:3000]:
            long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
    assert long == []


def test_docs_name_nothing_outside_the_repository() -> None:
    docs = [
        p
        for top in ("README.md", "docs", "deploy", "stream", "models", "tests", "bench")
        for p in ([ROOT / top] if top.endswith(".md") else (ROOT / top).rglob("*.md"))
    ]
    assert len(docs) >= 5
    for path in docs:
        text = path.read_text()
        assert "../shared" not in text, path
        assert not re.search(r"\bissues? \d+\b", text), path
