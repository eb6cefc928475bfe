"""The four sinks over one HTTP session each; secrets are read only when a request is made."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import orjson

from sluice.stream.delivery.sinks._http import post_json
from sluice.stream.delivery.sinks._payloads import (
    alertmanager_alerts,
    pagerduty_event,
    sign,
    slack_message,
)
from sluice.stream.delivery.sinks._protocol import Sink
from sluice.stream.errors import SinkError
from sluice.stream.records import Alert
from sluice.stream.settings import SinkName, SinkSettings

__all__ = [
    "AlertmanagerSink",
    "PagerDutySink",
    "SlackSink",
    "WebhookSink",
    "create_sink",
]


class _HttpSink:
    name: str = ""

    def __init__(self, cfg: SinkSettings, session: Any) -> None:
        self.cfg = cfg
        self._session = session

    async def _post(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        await post_json(self.name, self._session, url, body, headers, self.cfg.timeout_s)


class SlackSink(_HttpSink):
    """Slack incoming webhook: a Block Kit message per revision and one on resolution."""

    name = "slack"

    async def deliver(self, alert: Alert) -> None:
        assert self.cfg.slack_webhook_url is not None
        body = orjson.dumps(slack_message(alert))
        await self._post(self.cfg.slack_webhook_url.get_secret_value(), body)


class PagerDutySink(_HttpSink):
    """PagerDuty Events API v2: trigger per revision (same dedup_key), resolve on resolution."""

    name = "pagerduty"

    async def deliver(self, alert: Alert) -> None:
        assert self.cfg.pagerduty_routing_key is not None
        key = self.cfg.pagerduty_routing_key.get_secret_value()
        await self._post(self.cfg.pagerduty_url, orjson.dumps(pagerduty_event(alert, key)))


class AlertmanagerSink(_HttpSink):
    """Prometheus Alertmanager `POST /api/v2/alerts`: its routes and silences apply."""

    name = "alertmanager"

    async def deliver(self, alert: Alert) -> None:
        assert self.cfg.alertmanager_url is not None
        hold = timedelta(seconds=self.cfg.alertmanager_hold_s)
        url = self.cfg.alertmanager_url.rstrip("/") + "/api/v2/alerts"
        await self._post(url, orjson.dumps(alertmanager_alerts(alert, hold)))


class WebhookSink(_HttpSink):
    """Any HTTP endpoint: the alert record as JSON, signed with HMAC-SHA256 over a timestamp."""

    name = "webhook"

    async def deliver(self, alert: Alert) -> None:
        assert self.cfg.webhook_url is not None
        body = alert.to_bytes()
        headers = {}
        if self.cfg.webhook_hmac_key is not None:
            ts = int(time.time())
            key = self.cfg.webhook_hmac_key.get_secret_value().encode()
            headers = {"X-Sluice-Timestamp": str(ts), "X-Sluice-Signature": sign(key, ts, body)}
        await self._post(self.cfg.webhook_url.get_secret_value(), body, headers)


_SINKS: dict[SinkName, Callable[[SinkSettings, Any], Sink]] = {
    "slack": SlackSink,
    "pagerduty": PagerDutySink,
    "alertmanager": AlertmanagerSink,
    "webhook": WebhookSink,
}


def create_sink(name: SinkName, cfg: SinkSettings, session: Any) -> Sink:
    """The sink `name` over an aiohttp session; SinkError if its settings are missing."""
    missing = cfg.missing(name)
    if missing:
        raise SinkError(name, f"not configured: set {missing}", retryable=False)
    return _SINKS[name](cfg, session)


class RecordingSink:
    """Test double: keeps what it is given; fails its first `fail_first` deliveries."""

    def __init__(self, name: str = "recording", fail_first: int = 0, retryable: bool = True):
        self.name = name
        self.alerts: list[Alert] = []
        self.calls = 0
        self._fail_first = fail_first
        self._retryable = retryable

    async def deliver(self, alert: Alert) -> None:
        self.calls += 1
        if self.calls <= self._fail_first:
            raise SinkError(self.name, f"failure {self.calls} (test)", retryable=self._retryable)
        self.alerts.append(alert)
