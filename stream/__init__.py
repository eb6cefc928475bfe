"""Sluice's stream application: a package per stage of the data flow, read top-down.

- `kafka`      clients, topics and followers of topics (the `models` registry, controls, verdicts)
- `ingest`     records from files and topics -> events (JSON and plain-text formats)
- `filtering`  the filter stage: events -> scored, sampled suspects (ONNX filter, verdicts)
- `signals`    what a line filter cannot see: silences, rate shifts, new lines, slow edges
- `analysis`   the analysis stage: suspects -> windows -> LLM analyses -> alerts and feedback
- `learning`   feedback -> retrained filters, the `models` topic as registry, recall estimates
- `delivery`   alerts -> sinks (Slack, PagerDuty, Alertmanager, webhooks); acks and silences
- `observe`    metrics, the status page, the terminal view, logging
- `cli`        every command of `sluice`
- `worker`, `scan`   the composition roots: both stages on Kafka, or in-process on a file
- `settings`, `records`, `wire`, `errors`   what every stage shares: settings, wire records and
  how another release's are read, errors
- `testing`    test doubles for users' own tests (in-memory store, recording sink, fake LLM ...)

Importing `sluice.stream` loads neither Faust nor a Kafka client (`stream._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if __name__ != "sluice.stream":  # the repository root on sys.path: a second copy of every class
    raise ImportError(
        f"imported as {__name__!r}: import `sluice.stream` (pip install -e .), not the "
        "repository's folder, or every class would exist twice"
    )

from sluice.stream._lazy import lazy_names

if TYPE_CHECKING:
    from sluice.stream._version import __version__
    from sluice.stream.errors import SettingsError, SluiceError, SluiceKafkaError
    from sluice.stream.kafka.clients import client_config
    from sluice.stream.kafka.topics import ensure_topics
    from sluice.stream.settings import (
        KafkaSettings,
        LLMSettings,
        PipelineSettings,
        RetrainSettings,
        Settings,
        SignalSettings,
        SinkSettings,
        TopicNames,
        WorkerSettings,
        check_environment,
        describe_settings,
        setting_names,
    )

__all__ = [
    "KafkaSettings",
    "LLMSettings",
    "PipelineSettings",
    "RetrainSettings",
    "Settings",
    "SettingsError",
    "SignalSettings",
    "SinkSettings",
    "SluiceError",
    "SluiceKafkaError",
    "TopicNames",
    "WorkerSettings",
    "__version__",
    "check_environment",
    "client_config",
    "describe_settings",
    "ensure_topics",
    "setting_names",
]

__getattr__, __dir__ = lazy_names(
    globals(),
    {
        "sluice.stream._version": ["__version__"],
        "sluice.stream.errors": ["SettingsError", "SluiceError", "SluiceKafkaError"],
        "sluice.stream.kafka.clients": ["client_config"],
        "sluice.stream.kafka.topics": ["ensure_topics"],
        "sluice.stream.settings": [
            "KafkaSettings",
            "LLMSettings",
            "PipelineSettings",
            "RetrainSettings",
            "Settings",
            "SignalSettings",
            "SinkSettings",
            "TopicNames",
            "WorkerSettings",
            "check_environment",
            "describe_settings",
            "setting_names",
        ],
    },
)
