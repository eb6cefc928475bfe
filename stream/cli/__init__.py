"""The `sluice` command: every command group in one package (`main` builds the group; `loop`:
label, retrain and the model registry; `model`: training and checking filter models;
`controls`: acks and silences; `sinks`: alert sinks)."""

from sluice.stream.cli.main import main

__all__ = ["main"]
