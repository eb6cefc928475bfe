"""Sluice's stream application, one module or package per stage of the data flow.

- `stream.sources`   reading log files (scan, produce)
- `stream.parsing`   events -> columns / `Event` (or a dead letter with the reason)
- `stream.filtering` the filter stage: events -> suspects, on aiokafka batches
- `stream.signals`   what a line filter cannot see: silences, rate shifts, new lines, slow edges
- `stream.analysis`  the analysis stage: suspects -> windows -> alerts and feedback, on Faust
- `stream.redaction` secrets and personal data out of what leaves for the LLM and `feedback`
- `stream.retrain`   the retrainer: feedback -> challenger vs champion -> `models` topic
- `stream.registry`  the `models` topic as the model registry; the workers' hot swap
- `stream.recall`    the audit-based recall estimate of each model version
- `stream.metrics`   the worker's Prometheus metrics
- `stream.sinks`     alerts -> Slack, PagerDuty, Alertmanager, webhooks (`sluice sink run NAME`)
- `stream.scan`      both stages in-process on a file (`sluice scan`)
- `stream.logs`      repeated warnings once per interval, with a count (broker outages)
- `stream.records`   wire records and their JSON Schemas
- `stream.broker`    Kafka client configuration and topics
- `stream.worker`, `stream.cli`   the entry points

Importing `stream` loads neither Faust nor a Kafka client.
"""

from sluice.stream._errors import SluiceError
from sluice.stream._settings import (
    KafkaSettings,
    LLMSettings,
    PipelineSettings,
    RetrainSettings,
    Settings,
    SettingsError,
    SignalSettings,
    SinkSettings,
    TopicNames,
    WorkerSettings,
    check_environment,
    describe_settings,
    setting_names,
)
from sluice.stream.broker import SluiceKafkaError, client_config, ensure_topics

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
    "check_environment",
    "client_config",
    "describe_settings",
    "ensure_topics",
    "setting_names",
]
