"""The root of every error Sluice's stream package raises, with the context it happened in."""

from __future__ import annotations

__all__ = ["SluiceError"]


class SluiceError(Exception):
    """Root of the stream package's errors.

    Subclasses carry where it happened (topic, partition, offset) when there is a record involved.
    """
