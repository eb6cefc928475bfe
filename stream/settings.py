"""The one settings object, built at the entry point and passed down.

Every field can be set from the environment with the ``SLUICE_`` prefix and ``__`` between
levels, e.g. ``SLUICE_KAFKA__BOOTSTRAP_SERVERS`` or ``SLUICE_LLM__API_KEY``. Nothing reads the
environment at import time: ``Settings()`` does, when the CLI (or a test) builds it.

Why one module at over 500 lines: one settings object is the rule (every knob in one place,
one prefix, one `sluice config` to print them); each section is a small class of its own here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sluice.models.analyst._config import LLMSettings
from sluice.stream.errors import SettingsError

if TYPE_CHECKING:
    from sluice.stream.ingest.textformats import TextFormats

__all__ = [
    "SINK_NAMES",
    "TOOL_VARIABLES",
    "FirstSightSettings",
    "KafkaSettings",
    "LLMSettings",
    "PipelineSettings",
    "RetrainSettings",
    "Settings",
    "SettingsError",
    "SinkName",
    "SinkSettings",
    "TopicNames",
    "WorkerSettings",
    "check_environment",
    "describe_settings",
    "setting_names",
]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(
        None, description="CA bundle (PEM) that signed the brokers' certificates; None: system CAs"
    )
    ssl_certfile: Path | None = Field(None, description="client certificate (PEM), for mTLS")
    ssl_keyfile: Path | None = Field(None, description="client private key (PEM), for mTLS")
    ssl_check_hostname: bool = Field(True, description="check the broker's name on its cert")
    group_id: str = Field("sluice", description="consumer group of the workers, and Faust app id")
    partitions: int = Field(6, ge=1, description="partitions of topics that Sluice creates")
    replication_factor: int = Field(1, ge=1)
    retention_hours: int = Field(72, ge=1, description="retention of the non-compacted topics")
    instance_id: str | None = Field(
        None,
        description="static group membership (group.instance.id): a worker restarted with the "
        "same id gets its partitions back without a rebalance; unique per worker",
    )
    session_timeout_s: float = Field(
        10.0, ge=6, le=300, description="a worker silent this long leaves the group"
    )
    connect_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="how long a command (and a worker's start) tries to reach the brokers "
        "before it says it cannot",
    )


class TopicNames(BaseModel):
    events: str = "events"
    suspects: str = "suspects"
    alerts: str = "alerts"
    feedback: str = "feedback"
    outcomes: str = "outcomes"
    models: str = "models"
    deadletter: str = "deadletter"
    controls: str = "controls"
    # The OpenTelemetry Collector's Kafka exporter's default topics, read by the filter stage:
    # each record one OTLP request (protobuf or JSON, told apart per record).
    otlp_logs: str = Field("otlp_logs", description="OTLP log requests (collector's default)")
    otlp_spans: str = Field("otlp_spans", description="OTLP trace requests (collector's default)")
    otlp_metrics: str = Field(
        "otlp_metrics", description="OTLP metric requests (collector's default)"
    )

    def otlp_signals(self) -> dict[str, Literal["logs", "traces", "metrics"]]:
        """Topic -> the OTLP signal its records carry."""
        return {self.otlp_logs: "logs", self.otlp_spans: "traces", self.otlp_metrics: "metrics"}


class SignalSettings(BaseModel):
    """Signals about what is missing or slow (`stream.signals`), `SLUICE_PIPELINE__SIGNALS__*`.

    Off by default: they change which windows alert (errors the baseline already holds stay
    `info`), need minutes of history per scope, and cost throughput (README, "Signals")."""

    enabled: bool = Field(False, description="count every event and give windows their signals")

    bucket_s: float = Field(10.0, gt=0, description="event-time bucket of the counters")
    baseline_delay_s: float = Field(300.0, ge=0, description="a bucket joins the baseline then")
    alpha: float = Field(0.05, gt=0, le=1, description="EWMA weight of one bucket")
    min_history: int = Field(12, ge=1, description="buckets a baseline needs before it judges")
    min_expected: float = Field(30.0, ge=0, description="events a drop or silence must miss")
    drop_ratio: float = Field(0.6, ge=0, le=1, description="observed/expected below: a drop")
    min_z: float = Field(3.0, ge=0, description="and this many standard deviations off")
    block_buckets: int = Field(6, ge=1, description="buckets per block of the rate's spread")
    block_alpha: float = Field(0.2, gt=0, le=1, description="EWMA weight of one block")
    min_blocks: int = Field(3, ge=1, description="blocks a rate's spread needs to judge")
    min_expected_line: float = Field(8.0, ge=0, description="events a line drop must miss")
    line_drop_ratio: float = Field(0.25, ge=0, le=1, description="observed/expected: line drop")
    min_step_share: float = Field(
        0.5, ge=0, le=1, description="a next line that follows this share of times or more"
    )
    min_expected_step: float = Field(
        5.0, ge=0, description="times a next line must be missed for a missing step"
    )
    min_step_history: int = Field(
        60, ge=1, description="buckets a next line must have followed in before it is missed"
    )
    min_surprise: float = Field(10.0, ge=0, description="-ln P of a missing step: a signal")
    max_held_buckets: int = Field(
        60, ge=0, description="buckets a missing step is held out of its baseline, at most"
    )
    spike_ratio: float = Field(4.0, gt=1, description="observed/expected above: a spike")
    min_spike: float = Field(30.0, ge=0, description="events above expected for a spike")
    min_new: int = Field(3, ge=1, description="events of an unseen template for a signal")
    slow_ratio: float = Field(3.0, gt=1, description="p95 gap over baseline p95: a slow edge")
    min_slow_s: float = Field(0.03, ge=0, description="and at least this many seconds more")
    min_gaps: int = Field(20, ge=1, description="gaps an edge needs in a span to be judged")
    max_keys: int = Field(2000, ge=10, description="services, templates, edges kept, each")
    trace_ttl_s: float = Field(120.0, gt=0, description="traces are forgotten after this")
    max_signals: int = Field(12, ge=0, description="signals per span, strongest first")
    telemetry: bool = Field(
        True,
        description="spans and metric points as evidence (self time, time outside a callee, "
        "failed calls, saturation), whether or not `enabled` adds the line signals",
    )
    telemetry_alpha: float = Field(
        0.1, gt=0, le=1, description="EWMA weight of one block in a span or metric baseline"
    )
    telemetry_min_z: float = Field(
        4.0, ge=0, description="standard deviations off a span or metric baseline: a signal"
    )
    min_spans: int = Field(10, ge=1, description="spans (calls) a service (edge) needs in a span")
    min_saturation: float = Field(
        0.25, ge=0, description="relative change of a metric a saturation signal needs"
    )


class TextSettings(BaseModel):
    """Plain-text lines: their format per source (`stream.textformats`)."""

    detect: bool = Field(
        True, description="find each source's format (syslog, log4j, ...) from its first lines"
    )
    probe_lines: int = Field(
        16, ge=1, description="lines of a source seen before its format is chosen"
    )
    zone: str = Field("UTC", description="the time zone of times written without one (IANA name)")
    multiline: bool = Field(
        True,
        description="join a stack trace's lines (indented, `Caused by:`, a traceback) to the "
        "line they continue, within one fetched batch (`stream.ingest.multiline`)",
    )
    max_lines: int = Field(200, ge=1, description="records one multi-line event joins at most")
    patterns: dict[str, str] = Field(
        default_factory=dict,
        description="source glob (file name, record key or topic) -> a built-in format's name "
        "or a grok-style pattern with a %{GREEDYDATA:body} field; overrides detection",
    )

    @field_validator("zone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        if v.upper() != "UTC":
            try:
                ZoneInfo(v)
            except Exception:  # ZoneInfoNotFoundError is a KeyError; a bad name a ValueError
                raise ValueError(f"unknown time zone {v!r} (an IANA name: Europe/Berlin)") from None
        return v

    @field_validator("patterns")
    @classmethod
    def _usable_patterns(cls, v: dict[str, str]) -> dict[str, str]:
        from sluice.stream.ingest.textformats import TextFormats

        TextFormats(v)  # a pattern that cannot be compiled is refused at start, not per line
        return v

    def formats(self, reference: float | None = None) -> TextFormats:
        from sluice.stream.ingest.textformats import TextFormats

        return TextFormats(
            self.patterns,
            zone=self.zone,
            probe_lines=self.probe_lines,
            detect=self.detect,
            reference=reference,
        )


class FirstSightSettings(BaseModel):
    """New templates to the LLM, its verdicts back into the filter (`..._FIRST_SIGHT__*`).

    A template that holds no verdict is forwarded on each of its first `forwards` sightings, then
    with probability `forwards / n` on its n-th, down to the audit rate: the LLM judges every
    template that occurs within minutes, and each suspect records the probability it was drawn
    with (the recall estimate weighs it by that). Verdicts from `feedback` (a person's over the
    LLM's, the latest within a source) decide their template at once: relevant is forwarded,
    not relevant is audited only."""

    enabled: bool = Field(True, description="forward unseen templates on first sight")
    forwards: int = Field(3, ge=1, description="sightings of a new template forwarded for sure")
    budget_per_min: float = Field(
        600.0,
        ge=0,
        description="first-sight forwards per minute per worker (one minute's worth may come "
        "at once); beyond it, unseen templates are sampled at the audit rate and counted",
    )
    max_templates: int = Field(
        100_000, ge=100, description="templates whose sightings are counted (oldest forgotten)"
    )
    verdicts: bool = Field(True, description="apply per-template verdicts from `feedback`")
    max_verdicts: int = Field(
        50_000, ge=10, description="verdicts held per worker (least recently given evicted)"
    )


class PipelineSettings(BaseModel):
    """How events become suspects, windows and bundles (the same in `scan` and `worker`)."""

    audit_rate: float = Field(0.005, ge=0.0, le=1.0, description="share of unflagged events sent")
    window_s: float = Field(60.0, gt=0, description="event-time window per scope")
    allowed_lateness_s: float = Field(
        10.0, ge=0, description="a window closes when event time passes its end by this much"
    )
    idle_close_s: float = Field(
        30.0, gt=0, description="worker: close windows of a scope that got no events this long"
    )
    max_bundle_events: int = Field(2000, ge=1, description="a fuller window closes at once")
    max_event_bytes: int = Field(65536, ge=256)
    batch_size: int = Field(
        10000, ge=1, description="events fetched, parsed and scored at once (per fetch)"
    )
    default_service: str = "unknown"
    scope: str = Field("default", description="scope of events without a `scope` attribute")
    field_paths: dict[str, str] = Field(
        default_factory=dict,
        description="an event field (ts, service, host, level, message, trace_id, span_id, "
        "scope) -> the dotted path of a JSON record's value for it, over the built-in rules "
        '(`{"service": "kubernetes.labels.team"}`)',
    )
    scope_attribute: str | None = Field(
        None,
        description="an OTLP resource attribute whose value is the scope of its records "
        "(k8s.namespace.name, deployment.environment.name)",
    )
    model_path: Path | None = Field(None, description="filter model file; None: the shipped one")
    alert_time: Literal["wall", "event"] = Field(
        "wall", description="generated_at of alerts: the wall clock, or the window's end (fixed)"
    )
    resolve_after_s: float = Field(
        900.0,
        gt=0,
        description="a firing alert that no window has raised again for this long (wall clock) "
        "is resolved; an `info` window of its scope resolves it sooner",
    )
    degraded_retries: int = Field(
        8,
        ge=0,
        description="re-analyses of a window whose report was degraded (LLM down); with the "
        "doubling wait, the defaults cover an LLM outage of about 45 minutes",
    )
    retry_after_s: float = Field(
        30.0, ge=0, description="first wait before a degraded or failed window is analysed again"
    )
    retry_max_s: float = Field(600.0, ge=0, description="the wait doubles per attempt, up to this")
    max_analysis_failures: int = Field(
        3, ge=1, description="a window whose analysis raises this often goes to the dead letters"
    )
    max_live_scopes: int = Field(
        1000, ge=1, description="scopes with state per suspects partition; beyond: dead letters"
    )
    scope_evict_s: float = Field(
        3600.0, gt=0, description="state of a scope with nothing open or firing is dropped then"
    )
    signals: SignalSettings = Field(default_factory=SignalSettings)
    first_sight: FirstSightSettings = Field(default_factory=FirstSightSettings)
    text: TextSettings = Field(default_factory=TextSettings)
    redact: bool = Field(
        True,
        description="replace secrets and personal data in log text before it reaches the LLM "
        "or the feedback topic (the filter always scores the raw line)",
    )
    redact_patterns: dict[str, str] = Field(
        default_factory=dict,
        description="your own patterns: placeholder name -> regular expression (`<name>`)",
    )

    @field_validator("field_paths")
    @classmethod
    def _known_fields(cls, v: dict[str, str]) -> dict[str, str]:
        known = ("ts", "service", "host", "level", "message", "trace_id", "span_id", "scope")
        for name, path in v.items():
            if name not in known:
                raise ValueError(f"field_paths: {name!r} is not one of {', '.join(known)}")
            if not path or path.startswith(".") or path.endswith("."):
                raise ValueError(f"field_paths: {path!r} is not a dotted path")
        return v

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, v: dict[str, str]) -> dict[str, str]:
        for name, pattern in v.items():
            if not re.fullmatch(r"[a-z][a-z0-9_:]*", name):
                raise ValueError(f"placeholder name {name!r}: lower case letters, digits, _ or :")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {name!r} does not compile: {exc}") from None
        return v


class RetrainSettings(BaseModel):
    """`sluice retrain`: what the challenger learns from, and when it replaces the champion."""

    min_new: int = Field(100, ge=1, description="--watch: retrain after this many new labels")
    holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="newest share of the labels, held out to compare the models"
    )
    min_holdout: int = Field(
        3, ge=1, description="fewer held-out labels (templates): no comparison, no challenger"
    )
    target_recall: float | None = Field(
        None, gt=0, le=1, description="recall the threshold is set for; None: the champion's"
    )
    forward_tolerance: float = Field(
        0.1,
        ge=0,
        description="the challenger may forward this much more (relative) than the champion",
    )
    include_heuristic: bool = Field(
        False,
        description="train on the offline analyst's verdicts too (they echo the filter's own "
        "rules back to it, so they are left out by default)",
    )
    base_data: Path | None = Field(
        None,
        description="labeled lines (JSON lines: text, label, weight?, source?) trained on with "
        "the feedback: the champion's own training data, so the challenger does not forget it",
    )


class WorkerSettings(BaseModel):
    data_dir: Path = Field(Path("/tmp/sluice-worker"), description="Faust's local state directory")
    web_port: int | None = Field(None, description="Faust web server port; None disables it")
    log_level: Literal["debug", "info", "warn", "error", "crit"] = "info"
    standby_replicas: int = Field(
        1, ge=0, description="warm copies of the analysis state on other workers (failover)"
    )
    stall_timeout_s: float = Field(
        120.0,
        gt=0,
        description="/healthz fails once a stage has had lag this long with no progress",
    )
    stages: Literal["both", "filter", "analysis"] = Field(
        "both",
        description="the stages this worker runs: both in one process, or only the filter stage "
        "or only the analysis stage (each its own cores and replicas; run both kinds)",
    )


SinkName = Literal["slack", "pagerduty", "alertmanager", "webhook"]
SINK_NAMES: tuple[SinkName, ...] = ("slack", "pagerduty", "alertmanager", "webhook")


class SinkSettings(BaseModel):
    """Where `sluice sink run NAME` delivers alerts. URLs that embed a token are secrets."""

    slack_webhook_url: SecretStr | None = Field(None, description="Slack incoming webhook URL")
    pagerduty_routing_key: SecretStr | None = Field(
        None, description="PagerDuty Events API v2 integration (routing) key"
    )
    pagerduty_url: str = Field(
        "https://events.pagerduty.com/v2/enqueue", description="PagerDuty Events API v2 endpoint"
    )
    alertmanager_url: str | None = Field(
        None, description="Alertmanager base URL (alerts go to /api/v2/alerts)"
    )
    alertmanager_hold_s: float = Field(
        6 * 3600, gt=0, description="a firing alert's endsAt: this long after its last revision"
    )
    webhook_url: SecretStr | None = Field(None, description="generic webhook URL")
    webhook_hmac_key: SecretStr | None = Field(
        None, description="signs webhook bodies (X-Sluice-Signature: v1=HMAC-SHA256)"
    )
    max_attempts: int = Field(6, ge=1, description="deliveries tried before a dead letter")
    backoff_base_s: float = Field(1.0, gt=0, description="first retry wait (jittered, doubling)")
    backoff_max_s: float = Field(60.0, gt=0, description="longest retry wait")
    timeout_s: float = Field(10.0, gt=0, description="per HTTP request")

    def missing(self, name: SinkName) -> str:
        """The setting sink `name` needs and lacks ("" when it is configured)."""
        required = {
            "slack": self.slack_webhook_url,
            "pagerduty": self.pagerduty_routing_key,
            "alertmanager": self.alertmanager_url,
            "webhook": self.webhook_url,
        }
        needed = {"slack": "SLACK_WEBHOOK_URL", "pagerduty": "PAGERDUTY_ROUTING_KEY",
                  "alertmanager": "ALERTMANAGER_URL", "webhook": "WEBHOOK_URL"}  # fmt: skip
        value = required[name]
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        return "" if text else f"SLUICE_SINKS__{needed[name]}"  # empty counts as unset

    def configured(self) -> list[SinkName]:
        return [n for n in SINK_NAMES if not self.missing(n)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SLUICE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicNames = Field(default_factory=TopicNames)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    sinks: SinkSettings = Field(default_factory=SinkSettings)


#: SLUICE_ variables read by the tools around the settings object, not by it:
#: deploy/local/kafka (ports, heap, cache), the data loaders and the test suite.
TOOL_VARIABLES = frozenset(
    {
        "SLUICE_KAFKA_PORT",
        "SLUICE_KAFKA_CONTROLLER_PORT",
        "SLUICE_KAFKA_HEAP",
        "SLUICE_CACHE_DIR",
        "SLUICE_DATA_DIR",
        "SLUICE_TEST_BOOTSTRAP",
    }
)
_PREFIX = "SLUICE_"


def setting_names() -> dict[str, str]:
    """Every environment variable the settings read -> its dotted path (`kafka.group_id`)."""
    out: dict[str, str] = {}

    def walk(model: type[BaseModel], env: str, path: str) -> None:
        for name, info in model.model_fields.items():
            out[f"{env}__{name.upper()}"] = f"{path}.{name}"
            sub = info.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):  # a nested section
                walk(sub, f"{env}__{name.upper()}", f"{path}.{name}")

    for section, info in Settings.model_fields.items():
        out[f"{_PREFIX}{section.upper()}"] = section  # a whole section as JSON
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            walk(model, f"{_PREFIX}{section.upper()}", section)
    return out


def check_environment(environ: Mapping[str, str]) -> None:
    """Fail on SLUICE_ variables that are no setting, naming the closest real one.

    pydantic-settings ignores them, so `SLUICE_LLM_BASE_URL` (one underscore) would leave the LLM
    unset and the worker would fall back to the offline analyst without a word.
    """
    known = setting_names()
    unknown = sorted(
        k
        for k in environ
        if k.upper().startswith(_PREFIX)
        and k.upper() not in known
        and k.upper() not in TOOL_VARIABLES
    )
    if not unknown:
        return
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        lines.append(f"  {name}{hint}")
    raise SettingsError(
        "unknown setting(s) in the environment:\n" + "\n".join(lines) + "\n"
        "(`sluice config` lists every setting; nested ones use a double underscore)"
    )


def describe_settings(settings: Settings, environ: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(dotted name, value with secrets masked, where it came from) for every setting."""
    names = {v: k for k, v in setting_names().items()}
    environ = {k.upper(): v for k, v in environ.items()}  # pydantic-settings ignores case
    rows: list[tuple[str, str, str]] = []

    def walk(values: BaseModel, path: str, inherited: str | None) -> None:
        for name in type(values).model_fields:
            where = f"{path}.{name}"
            value = getattr(values, name)
            env = names[where]
            source = f"env {env}" if env in environ else inherited
            if isinstance(value, BaseModel):  # a nested section: one row per setting
                walk(value, where, source)
                continue
            if isinstance(value, SecretStr):
                shown = "**********"
            else:
                shown = "(unset)" if value is None else str(value)
            rows.append((where, shown, source or "default"))

    for section in Settings.model_fields:
        whole = names[section]
        walk(getattr(settings, section), section, f"env {whole}" if whole in environ else None)
    return rows
