"""`sluice.stream.__version__`, read from the installed metadata when first asked for
(importlib.metadata costs about 30 ms to import: not paid by every `import sluice.stream`)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("sluice")
except PackageNotFoundError:  # a tree that was never installed
    __version__ = "0+unknown"
