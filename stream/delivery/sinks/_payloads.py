"""What each receiver is sent for one alert revision: pure functions of the alert.

Mapped so that the receiver's own features work: PagerDuty deduplicates and resolves by
`dedup_key` (the fingerprint); Alertmanager routes, groups and silences on labels and ends an
alert at `endsAt`; Slack shows a Block Kit message; a generic webhook gets the alert record as it
is on the `alerts` topic, signed.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from typing import Any

from sluice.stream.records import Alert

__all__ = [
    "PAGERDUTY_SEVERITY",
    "alertmanager_alerts",
    "pagerduty_event",
    "sign",
    "slack_message",
    "verify_signature",
]

#: Sluice severity -> PagerDuty Events API v2 severity.
PAGERDUTY_SEVERITY = {"critical": "critical", "high": "error", "warning": "warning", "info": "info"}
_EMOJI = {"critical": ":rotating_light:", "high": ":red_circle:", "warning": ":warning:",
          "info": ":information_source:"}  # fmt: skip


def _root(a: Alert) -> str:
    """The probable root-cause service, else the first affected one, else the scope."""
    r = a.report
    if r.root_causes:
        return r.root_causes[0].service
    return r.affected_services[0].service if r.affected_services else r.scope


def slack_message(a: Alert) -> dict[str, Any]:
    """A Block Kit message; each revision and the resolution is a message of its own, marked so
    (an incoming webhook can post, not edit)."""
    r = a.report
    firing = a.status == "firing"
    state = f"{r.severity.upper()} · revision {a.revision}" if firing else "RESOLVED"
    title = f"{_EMOJI[r.severity] if firing else ':white_check_mark:'} {r.title}"
    fields = [
        f"*Status*\n{state}",
        f"*Scope*\n{r.scope}",
        f"*Probable root cause*\n{_root(a)}",
        f"*Fingerprint*\n`{a.fingerprint}`",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": r.summary[:2900]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if r.affected_services:
        affected = ", ".join(f"{s.service} ({s.role})" for s in r.affected_services[:10])
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": affected}]})
    if a.acknowledged and firing:
        ack = f":eyes: Acknowledged by {a.acknowledged.by}"
        ack += f": {a.acknowledged.note}" if a.acknowledged.note else ""
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": ack[:2900]}]})
    if r.recommendations and firing:
        todo = "\n".join(f"• {x}" for x in r.recommendations[:5])
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": todo[:2900]}})
    return {"text": f"[{state}] {r.title}"[:300], "blocks": blocks}


def pagerduty_event(a: Alert, routing_key: str) -> dict[str, Any]:
    """An Events API v2 event: trigger (each revision updates the same incident), acknowledge
    (someone ran `sluice ack`; later revisions of the episode acknowledge again, never page) or
    resolve."""
    r = a.report
    if a.status == "resolved" or a.acknowledged:
        action = "resolve" if a.status == "resolved" else "acknowledge"
        return {"routing_key": routing_key, "event_action": action, "dedup_key": a.fingerprint}
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": a.fingerprint,
        "payload": {
            "summary": f"{r.title}: {r.summary}"[:1024],
            "source": r.scope,
            "severity": PAGERDUTY_SEVERITY[r.severity],
            "timestamp": (r.first_seen or a.generated_at).isoformat(),
            "component": _root(a),
            "group": r.scope,
            "class": "incident",
            "custom_details": {
                "revision": a.revision,
                "affected_services": [f"{s.service} ({s.role})" for s in r.affected_services],
                "root_causes": [f"{c.service}: {c.description}" for c in r.root_causes],
                "recommendations": r.recommendations,
                "analysis": a.provenance.analysis,
            },
        },
    }


def alertmanager_alerts(a: Alert, hold: timedelta) -> list[dict[str, Any]]:
    """The body of `POST /api/v2/alerts`. A firing alert ends `hold` after its revision unless
    a later one extends it; a resolved one ends at its resolution."""
    r = a.report
    ends = a.generated_at if a.status == "resolved" else a.generated_at + hold
    return [
        {
            "labels": {
                "alertname": "SluiceIncident",
                "severity": r.severity,
                "scope": r.scope,
                "service": _root(a),
                "fingerprint": a.fingerprint,
            },
            "annotations": {
                "summary": r.title,
                "description": r.summary,
                "affected_services": ", ".join(s.service for s in r.affected_services),
                "recommendations": "\n".join(r.recommendations),
                "revision": str(a.revision),
                **(
                    {"acknowledged_by": a.acknowledged.by, "ack_note": a.acknowledged.note or ""}
                    if a.acknowledged
                    else {}
                ),
            },
            "startsAt": _rfc3339(r.first_seen or a.generated_at),
            "endsAt": _rfc3339(ends),
        }
    ]


def _rfc3339(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    """`v1=` + HMAC-SHA256 over `"{timestamp}." + body`: the timestamp is signed too, so a
    captured request cannot be replayed later with a fresh one."""
    mac = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={mac}"


def verify_signature(
    key: bytes, timestamp: str, body: bytes, signature: str, now: float, tolerance_s: float = 300
) -> bool:
    """What a receiver checks: a fresh timestamp and a matching signature (constant time)."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(key, ts, body), signature)
