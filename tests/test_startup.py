"""The CLI starts without loading what only some commands need (Faust, ONNX, scikit-learn)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("faust", "aiokafka", "kafka", "onnxruntime", "onnx", "sklearn", "scipy", "openai")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return {m.split(".")[0] for m in json.loads(out.stdout.splitlines()[-1])}


def test_importing_the_cli_and_the_packages_loads_no_heavy_library() -> None:
    loaded = _loaded_after("import stream, stream.cli, models.filter, models.analyst")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_filter_loads_onnx_runtime_but_not_training_or_faust() -> None:
    loaded = _loaded_after("from models.filter import OnnxFilter\nOnnxFilter()")
    assert "onnxruntime" in loaded
    assert not loaded & {"faust", "sklearn", "openai"}
