"""Helpers the tests share (not tests themselves): Kafka, sink receivers, the hostile corpus,
records of the pipeline."""

from pathlib import Path

#: The repository root.
ROOT = Path(__file__).resolve().parents[2]
