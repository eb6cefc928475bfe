"""Sinks: the `alerts` topic delivered where on-call people look.

`sluice sink run NAME` runs one sink (`slack`, `pagerduty`, `alertmanager`, `webhook`) as a
consumer of `alerts` in its own group; several may run at once. Retries with jittered backoff,
offsets committed only after delivery, a dead letter (with the sink and the reason) after
`sinks.max_attempts`. Secrets (webhook URLs, routing keys, HMAC keys) are `SecretStr` settings
and never appear in logs or errors.
"""

from sluice.stream.delivery.sinks._payloads import (
    PAGERDUTY_SEVERITY,
    alertmanager_alerts,
    pagerduty_event,
    sign,
    slack_message,
    verify_signature,
)
from sluice.stream.delivery.sinks._protocol import Sink
from sluice.stream.delivery.sinks._runner import SinkRunner, sink_group
from sluice.stream.delivery.sinks._sinks import (
    AlertmanagerSink,
    PagerDutySink,
    RecordingSink,
    SlackSink,
    WebhookSink,
    create_sink,
)
from sluice.stream.errors import SinkError

__all__ = [
    "PAGERDUTY_SEVERITY",
    "AlertmanagerSink",
    "PagerDutySink",
    "RecordingSink",
    "Sink",
    "SinkError",
    "SinkRunner",
    "SlackSink",
    "WebhookSink",
    "alertmanager_alerts",
    "create_sink",
    "pagerduty_event",
    "sign",
    "sink_group",
    "slack_message",
    "verify_signature",
]
