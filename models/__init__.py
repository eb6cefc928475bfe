"""Sluice's models: the small ONNX filter, the large-model analyst, and their training."""

if __name__ != "sluice.models":  # the repository root on sys.path: a second copy of every class
    raise ImportError(
        f"imported as {__name__!r}: import `sluice.models` (pip install -e .), not the "
        "repository's folder, or every class would exist twice"
    )

__all__: list[str] = []
