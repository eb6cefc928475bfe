"""The CLI starts without loading what only some commands need (Faust, ONNX, scikit-learn)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("kafka", "ingest", "filtering", "signals", "analysis", "learning", "delivery", "observe")

HEAVY = ("faust", "aiokafka", "kafka", "onnxruntime", "onnx", "sklearn", "scipy", "openai")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return {m.split(".")[0] for m in json.loads(out.stdout.splitlines()[-1])}


def test_importing_the_cli_and_the_packages_loads_no_heavy_library() -> None:
    packages = ", ".join(f"sluice.stream.{p}" for p in STAGES)
    loaded = _loaded_after(
        f"import sluice.stream, sluice.stream.cli, {packages}, sluice.models.filter, "
        "sluice.models.analyst, sluice.stream.errors"
    )
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_filter_loads_onnx_runtime_but_not_training_or_faust() -> None:
    loaded = _loaded_after("from sluice.models.filter import OnnxFilter\nOnnxFilter()")
    assert "onnxruntime" in loaded
    assert not loaded & {"faust", "sklearn", "openai"}


@pytest.mark.parametrize("name", ["stream", "models"])
def test_the_repository_folders_cannot_be_imported_as_a_second_copy(name: str) -> None:
    """From the repository root `stream` would load every class a second time beside
    `sluice.stream`'s (two `Alert`s, never equal): it fails, saying what to import instead."""
    out = subprocess.run(
        [sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert f"import `sluice.{name}`" in out.stderr


def test_sluice_version_says_the_installed_version() -> None:
    from importlib.metadata import version

    out = subprocess.run(
        [sys.executable, "-m", "sluice.stream", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"sluice {version('sluice')}"


def test_the_version_is_read_only_when_asked_for() -> None:
    """importlib.metadata costs about 30 ms: `import sluice.stream` does not pay it."""
    probe = (
        "import sys, sluice.stream as s\n"
        "print('importlib.metadata' in sys.modules, s.__version__)"  # before, then after
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded_before, version = out.stdout.split()
    assert loaded_before == "False"
    from importlib.metadata import version as installed

    assert version == installed("sluice")


def test_a_command_without_a_broker_says_so_in_one_line_within_its_connect_timeout() -> None:
    """`sluice alerts` with nothing listening: one line naming the address, no client log,
    within SLUICE_KAFKA__CONNECT_TIMEOUT_S (and a few seconds of start)."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PATH": "/usr/bin:/bin", "SLUICE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
           "SLUICE_KAFKA__CONNECT_TIMEOUT_S": "2"}  # fmt: skip
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "sluice.stream", "alerts", "--timeout", "2"],
                         capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    took = time.monotonic() - started
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach Kafka at 127.0.0.1:{port}" in lines[0], lines
    assert took < 20, took
