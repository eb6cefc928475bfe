"""The wheel's layout: every package folder is listed under its `sluice.` name, and nothing
installs as a generic top-level `stream` or `models` (`make package-check` installs the real
wheel into a fresh virtual environment and runs `sluice scan --demo` from outside the checkout).
"""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_in_the_wheel_under_sluice() -> None:
    mapping = SETUPTOOLS["package-dir"]
    assert mapping == {"sluice.stream": "stream", "sluice.models": "models"}
    found = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    data_only = {"sluice.stream.demo"}
    assert set(SETUPTOOLS["packages"]) == found | data_only
    # the default model's recipe reads our data folder: a developer's tool, never installed
    assert not (ROOT / "models" / "training" / "__init__.py").exists()
    assert not any(p.startswith("sluice.models.training") for p in SETUPTOOLS["packages"])


def test_the_editable_install_maps_sluice_to_the_checkouts_folders() -> None:
    assert importlib.util.find_spec("sluice.models.filter") is not None
    import sluice.stream

    assert Path(sluice.stream.__file__ or "").parent == ROOT / "stream"


def test_the_license_is_an_spdx_expression() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
