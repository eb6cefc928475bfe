"""`sluice model ...`: inspect, score with, and train filter models."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sluice.models.filter._normalize import decode_line

if TYPE_CHECKING:
    from sluice.models.filter._model import FilterModel

__all__ = ["model"]

_BLOCK_BYTES = 4 << 20  # read and scored at once


def _load(path: str | None) -> FilterModel:
    from sluice.models.filter._model import FilterModel
    from sluice.models.filter._runtime import default_model
    from sluice.stream.errors import FilterError

    try:
        return FilterModel.from_path(path) if path else default_model()
    except FilterError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def model() -> None:
    """Inspect, score with, and train filter models (default: the model that ships)."""


@model.command("info")
@click.argument("path", required=False)
def info(path: str | None) -> None:
    """Print a model's metadata as JSON: version, threshold, validation figures, feature spec."""
    click.echo(json.dumps(_load(path).describe(), indent=2))


@model.command("score")
@click.argument("path", required=False)
@click.option("--flag-only", is_flag=True, help="print only the lines the model flags")
def score(path: str | None, flag_only: bool) -> None:
    """Score lines from stdin: prints `score<TAB>flag<TAB>line` per line."""
    m = _load(path)
    stdin, out = sys.stdin.buffer, sys.stdout
    while True:
        block = stdin.read(_BLOCK_BYTES)
        if not block:
            break
        if not block.endswith(b"\n"):
            block += stdin.readline()  # whole lines only
        out.write(_scored(m, block, flag_only))
    out.flush()


def _scored(m: FilterModel, block: bytes, flag_only: bool) -> str:
    """The output for a block of whole lines. Nothing runs per line in Python: the block is
    decoded at once (invalid UTF-8 replaced, as `decode_line` does), scored per distinct masked
    form, and each line's `score<TAB>flag<TAB>` prefix is one of the distinct scores' (1M lines
    a second was the target; the per-line loop did 250k)."""
    import operator

    import numpy as np

    lines = decode_line(block).split("\n")
    if block.endswith(b"\n"):
        lines.pop()
    if b"\r" in block:
        lines = list(map(str.rstrip, lines, itertools.repeat("\r\n")))
    scores = m.score(lines)
    distinct, which = np.unique(scores, return_inverse=True)
    flags = distinct >= m.threshold
    pairs = zip(distinct.tolist(), flags.tolist(), strict=True)
    prefixes = [f"{s:.6f}\t{int(f)}\t" for s, f in pairs]
    chosen = which.ravel().tolist()
    if flag_only:
        keep = np.flatnonzero(flags[which.ravel()]).tolist()
        lines = list(map(lines.__getitem__, keep))
        chosen = list(map(chosen.__getitem__, keep))
    if not lines:
        return ""
    return "\n".join(map(operator.add, map(prefixes.__getitem__, chosen), lines)) + "\n"


@model.command("train")
@click.option(
    "--data",
    "data",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="JSON lines: {text, label, weight?, source?}",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@click.option("--target-recall", default=0.99, show_default=True, type=click.FloatRange(0, 1))
@click.option("--seed", default=0, show_default=True)
def train_cmd(data: str, out: str, target_recall: float, seed: int) -> None:
    """Train a model from labeled lines and write the .onnx file."""
    from sluice.models.filter._train import read_examples, train
    from sluice.stream.errors import FilterError

    try:
        examples = read_examples(data)
        m = train(examples, target_recall=target_recall, seed=seed)
    except FilterError as exc:
        raise click.ClickException(str(exc)) from None
    m.save(Path(out))
    v = m.meta.validation
    figures = (
        (
            f"validation recall {v.recall:.4f}, precision {v.precision:.4f}, "
            f"forward ratio {v.forward_ratio:.4f}"
        )
        if v
        else "no validation split"
    )
    click.echo(f"model {m.version} written to {out}: threshold {m.threshold:.4f}, {figures}")
