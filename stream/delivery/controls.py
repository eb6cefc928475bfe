"""What people tell the pipeline about alerts: acknowledgements and silences.

`sluice ack FINGERPRINT` and `sluice silence TARGET --for 2h` write records to the compacted
`controls` topic (the latest record per fingerprint or target survives). Every worker and every
sink reads the whole topic into a `Controls` view, from the beginning and then as it grows:

- workers mark alerts: a firing alert someone acknowledged carries `acknowledged`, one under a
  silence carries `silenced_until`; when either changes (an ack arrives, a silence starts or
  ends) the worker publishes a new revision, so every sink and view learns of it;
- sinks notify nobody about an alert under a silence they know of (a resolution excepted: it
  closes what may have been opened before the silence), and tell receivers that can hear it that
  an alert was acknowledged (PagerDuty's `acknowledge`).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

from sluice.stream.errors import ControlError
from sluice.stream.records import Ack, Acknowledgement, Alert, Silence, parse_control_record
from sluice.stream.settings import Settings

__all__ = [
    "ControlError",
    "Controls",
    "ControlsWatcher",
    "parse_duration",
    "send_control",
]

log = logging.getLogger(__name__)

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+)([wdhms])")


def parse_duration(text: str) -> timedelta:
    """`2h`, `30m`, `1h30m`, `1d`, `90s`, `0s` -> a timedelta; ValueError for anything else."""
    t = text.strip().lower()
    parts = _DURATION.findall(t)
    if not t or "".join(n + u for n, u in parts) != t:
        raise ValueError(f"not a duration: {text!r} (examples: 2h, 30m, 1h30m, 1d, 0s)")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds > 366 * 86400:
        raise ValueError(f"duration {text!r} is longer than a year")
    return timedelta(seconds=seconds)


class Controls:
    """The acknowledgements and silences known so far (the latest record per key wins)."""

    def __init__(self) -> None:
        self._acks: dict[str, Ack] = {}
        self._silences: dict[str, Silence] = {}

    def apply(self, rec: Ack | Silence) -> None:
        if isinstance(rec, Ack):
            self._acks[rec.fingerprint] = rec
        else:
            self._silences[rec.target] = rec

    def acknowledgement(self, fingerprint: str, since: datetime) -> Acknowledgement | None:
        """The ack of the firing episode that started at `since`, if someone gave one."""
        ack = self._acks.get(fingerprint)
        if ack is None or ack.at < since:
            return None
        return Acknowledgement(by=ack.by, at=ack.at, note=ack.note)

    def silence(self, alert: Alert, now: datetime) -> Silence | None:
        """The silence that covers the alert now and lasts longest, if any."""
        covering = [s for s in self._silences.values() if s.covers(alert, now)]
        return max(covering, key=lambda s: s.until, default=None)

    def active(self, now: datetime) -> tuple[list[Ack], list[Silence]]:
        """Every ack, and the silences still running (`sluice controls`)."""
        silences = [s for s in self._silences.values() if s.until > now]
        return sorted(self._acks.values(), key=lambda a: a.at), sorted(
            silences, key=lambda s: s.until
        )


class ControlsWatcher:
    """Folds the whole `controls` topic into a `Controls` view, then follows it, until stopped."""

    def __init__(self, settings: Settings, controls: Controls | None = None) -> None:
        from sluice.stream.kafka.followers import TopicFollower

        self.controls = view = controls if controls is not None else Controls()
        self._follower = TopicFollower(
            settings,
            settings.topics.controls,
            "sluice-controls",
            lambda raw: view.apply(parse_control_record(raw)),
        )
        self.loaded = self._follower.loaded  # set once the records at start were read

    async def run(self) -> None:
        await self._follower.run()

    def stop(self) -> None:
        self._follower.stop()


def send_control(settings: Settings, rec: Ack | Silence, timeout_s: float = 30.0) -> None:
    """Write one control record and wait for the broker's acknowledgement (the CLI)."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from sluice.stream.kafka.clients import client_config

    topic = settings.topics.controls
    try:
        producer = KafkaProducer(**client_config(settings.kafka), acks="all")
        try:
            producer.send(topic, key=rec.key().encode(), value=rec.to_bytes()).get(timeout_s)
        finally:
            producer.close(timeout=timeout_s)
    except KafkaError as exc:
        raise ControlError(f"writing to {topic} failed: {exc!r}") from exc
