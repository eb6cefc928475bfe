"""Sluice's models: the small ONNX filter, the large-model analyst, and their training."""

__all__: list[str] = []
