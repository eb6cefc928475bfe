"""Sinks without a broker: what each receiver is sent, the webhook signature, and how HTTP
answers become deliveries, retries or refusals, against local HTTP receivers."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from sluice.stream import SinkSettings
from sluice.stream.delivery.sinks import (
    PAGERDUTY_SEVERITY,
    SinkError,
    alertmanager_alerts,
    create_sink,
    pagerduty_event,
    sign,
    slack_message,
    verify_signature,
)
from tests.support.sinks import Receiver, alert


def test_pagerduty_triggers_per_revision_and_resolves_by_fingerprint() -> None:
    first, later, resolved = alert(0), alert(1), alert(2, "resolved")
    t0, t1 = pagerduty_event(first, "rk"), pagerduty_event(later, "rk")
    assert t0["event_action"] == t1["event_action"] == "trigger"
    assert t0["dedup_key"] == t1["dedup_key"] == first.fingerprint  # one incident, updated
    assert t0["payload"]["severity"] == PAGERDUTY_SEVERITY["high"] == "error"
    assert t0["payload"]["component"] == "payment-service"
    assert t0["payload"]["source"] == "shop"
    assert t1["payload"]["custom_details"]["revision"] == 1
    assert pagerduty_event(resolved, "rk") == {
        "routing_key": "rk",
        "event_action": "resolve",
        "dedup_key": first.fingerprint,
    }


def test_alertmanager_labels_route_and_ends_at_marks_resolution() -> None:
    hold = timedelta(hours=6)
    (firing,) = alertmanager_alerts(alert(0), hold)
    (resolved,) = alertmanager_alerts(alert(2, "resolved"), hold)
    assert firing["labels"] == {
        "alertname": "SluiceIncident",
        "severity": "high",
        "scope": "shop",
        "service": "payment-service",
        "fingerprint": alert(0).fingerprint,
    }
    assert firing["labels"] == resolved["labels"]  # the same alert to Alertmanager
    assert firing["startsAt"] == "2024-06-01T08:00:00Z"
    assert firing["endsAt"] == "2024-06-01T14:01:00Z"  # generated 08:01 + 6 h
    assert resolved["endsAt"] == "2024-06-01T08:03:00Z"  # its resolution


def test_slack_message_says_state_revision_and_root_cause() -> None:
    firing = slack_message(alert(1))
    text = json.dumps(firing)
    assert firing["text"] == "[HIGH · revision 1] payment-service refuses connections"
    assert "payment-service" in text and "restart payment-service" in text
    resolved = slack_message(alert(2, "resolved"))
    assert resolved["text"].startswith("[RESOLVED]")
    assert "restart payment-service" not in json.dumps(resolved)
    assert all(b["type"] in ("header", "section", "context") for b in firing["blocks"])


@given(st.binary(max_size=2000), st.integers(0, 2**40), st.binary(min_size=1, max_size=64))
def test_signature_round_trip_and_tampering(body: bytes, ts: int, key: bytes) -> None:
    sig = sign(key, ts, body)
    assert verify_signature(key, str(ts), body, sig, now=ts)
    assert not verify_signature(key, str(ts), body + b"x", sig, now=ts)
    assert not verify_signature(key + b"x", str(ts), body, sig, now=ts)
    assert not verify_signature(key, str(ts + 1), body, sig, now=ts)  # the timestamp is signed


def test_a_replayed_request_is_refused_once_its_timestamp_is_old() -> None:
    body, key = alert().to_bytes(), b"k"
    sig = sign(key, 1000, body)
    assert verify_signature(key, "1000", body, sig, now=1000 + 299)
    assert not verify_signature(key, "1000", body, sig, now=1000 + 301)
    assert not verify_signature(key, "not-a-number", body, sig, now=1000)


@pytest.mark.parametrize(
    ("status", "retryable"), [(503, True), (429, True), (500, True), (400, False), (404, False)]
)
def test_http_answers_become_retries_or_refusals(status: int, retryable: bool) -> None:
    receiver = Receiver(fail_first=1, fail_status=status)

    async def go() -> list[SinkError]:
        base = await receiver.start()
        cfg = SinkSettings(webhook_url=SecretStr(f"{base}/hook/SECRETPART"))
        errors = []
        async with aiohttp.ClientSession() as session:
            sink = create_sink("webhook", cfg, session)
            for _ in range(2):
                try:
                    await sink.deliver(alert())
                except SinkError as exc:
                    errors.append(exc)
        await receiver.stop()
        return errors

    (error,) = asyncio.run(go())
    assert error.retryable is retryable
    assert f"HTTP {status}" in str(error)
    assert "SECRETPART" not in str(error)
    assert len(receiver.accepted) == 1  # the second attempt went through


def test_an_unreachable_receiver_is_retryable_and_its_url_stays_secret() -> None:
    async def go() -> SinkError:
        cfg = SinkSettings(
            slack_webhook_url=SecretStr("http://127.0.0.1:9/services/SECRETPART"), timeout_s=2
        )
        async with aiohttp.ClientSession() as session:
            with pytest.raises(SinkError) as info:
                await create_sink("slack", cfg, session).deliver(alert())
        return info.value

    error = asyncio.run(go())
    assert error.retryable and "SECRETPART" not in str(error)


def test_each_sink_posts_its_payload_to_its_endpoint() -> None:
    receiver = Receiver()

    async def go() -> None:
        base = await receiver.start()
        cfg = SinkSettings(
            slack_webhook_url=SecretStr(f"{base}/slack"),
            pagerduty_routing_key=SecretStr("routing-key-1"),
            pagerduty_url=f"{base}/v2/enqueue",
            alertmanager_url=f"{base}/am/",
            webhook_url=SecretStr(f"{base}/hook"),
            webhook_hmac_key=SecretStr("hmac-key"),
        )
        async with aiohttp.ClientSession() as session:
            for name in ("slack", "pagerduty", "alertmanager", "webhook"):
                await create_sink(name, cfg, session).deliver(alert())  # type: ignore[arg-type]
        await receiver.stop()

    asyncio.run(go())
    by_path = {path: (headers, json.loads(body)) for path, headers, body in receiver.accepted}
    assert set(by_path) == {"/slack", "/v2/enqueue", "/am/api/v2/alerts", "/hook"}
    assert by_path["/slack"][1] == slack_message(alert())
    assert by_path["/v2/enqueue"][1] == pagerduty_event(alert(), "routing-key-1")
    assert by_path["/am/api/v2/alerts"][1] == alertmanager_alerts(alert(), timedelta(hours=6))
    headers, body = by_path["/hook"]
    assert body == json.loads(alert().to_bytes())
    raw = next(b for p, _h, b in receiver.accepted if p == "/hook")
    ts = headers["X-Sluice-Timestamp"]
    assert verify_signature(b"hmac-key", ts, raw, headers["X-Sluice-Signature"], now=int(ts))


def test_a_sink_without_its_settings_names_the_variable() -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            create_sink("pagerduty", SinkSettings(), session)

    with pytest.raises(SinkError, match="SLUICE_SINKS__PAGERDUTY_ROUTING_KEY"):
        asyncio.run(go())


def test_an_empty_secret_counts_as_unset() -> None:
    """Compose and Kubernetes pass unset variables as empty strings: not a configured sink."""
    cfg = SinkSettings(slack_webhook_url=SecretStr(""), alertmanager_url="")
    assert cfg.missing("slack") == "SLUICE_SINKS__SLACK_WEBHOOK_URL"
    assert cfg.missing("alertmanager") == "SLUICE_SINKS__ALERTMANAGER_URL"
    assert SinkSettings(webhook_url=SecretStr("http://x/y")).configured() == ["webhook"]
