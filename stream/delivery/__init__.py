"""Delivery: alerts -> `sinks` (Slack, PagerDuty, Alertmanager, webhooks, each a consumer
group of its own); `controls`, the acks and silences people send back.

Importing the package loads none of its modules (`stream._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.stream._lazy import lazy_names

if TYPE_CHECKING:
    from sluice.stream.delivery.controls import (
        Controls,
        ControlsWatcher,
        parse_duration,
        send_control,
    )
    from sluice.stream.errors import ControlError

__all__ = ["ControlError", "Controls", "ControlsWatcher", "parse_duration", "send_control"]

__getattr__, __dir__ = lazy_names(
    globals(),
    {
        "sluice.stream.delivery.controls": [
            "ControlError",
            "Controls",
            "ControlsWatcher",
            "parse_duration",
            "send_control",
        ],
    },
)
