"""The seam every sink implements, and the errors that say whether a retry can help."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sluice.stream.errors import SinkError
from sluice.stream.records import Alert

__all__ = ["Sink", "SinkError"]


@runtime_checkable
class Sink(Protocol):
    """Delivers one alert revision (firing or resolved) where people look; raises SinkError."""

    @property
    def name(self) -> str: ...

    async def deliver(self, alert: Alert) -> None: ...
