"""The one way Sluice keeps imports light: a package's public names, loaded on first use.

A package lists where each public name lives (`{module: names}`, every name once) and keeps
its `__all__` and a `TYPE_CHECKING` import block for type checkers; `lazy_names` refuses at
import when `__all__` and the table disagree, so the three cannot drift apart. Importing the
package then loads none of its modules (PEP 562): the CLI and the settings do not pay for Faust,
ONNX Runtime, scikit-learn or openai until a name that needs them is used.

Below the packages, modules import what they use at the top, with two exceptions, each for the
same reason: the composition roots (`cli/`, `worker`) import a command's stages inside the
command, and the thin wrappers of heavy libraries (kafka-python, aiokafka, rich, networkx,
prometheus-client) import them inside the functions that use them, so that `sluice --help`, the
settings and `scan` start without them (`tests/test_startup.py` holds every package to that).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    namespace: dict[str, Any], where: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for a package whose public names live in the modules of
    `where` (module path -> names); the package's `__all__` must list exactly those names."""
    module_of = {name: module for module, names in where.items() for name in names}
    eager = {n for n in namespace["__all__"] if n in namespace}  # defined in the package itself
    if set(namespace["__all__"]) - eager != set(module_of):
        odd = sorted(set(namespace["__all__"]) ^ set(module_of) - eager)
        raise ImportError(f"{namespace['__name__']}: __all__ and its lazy names differ: {odd}")

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # the next access is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(namespace["__all__"])

    return __getattr__, __dir__
