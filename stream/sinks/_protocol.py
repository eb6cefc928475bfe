"""The seam every sink implements, and the errors that say whether a retry can help."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sluice.stream._errors import SluiceError
from sluice.stream.records import Alert

__all__ = ["Sink", "SinkError"]


class SinkError(SluiceError):
    """A delivery failed. `retryable`: a later attempt may succeed (timeouts, 5xx, 429);
    otherwise the receiver refused the alert as it is (4xx) and it goes to the dead letters."""

    def __init__(
        self, sink: str, message: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(f"sink {sink}: {message}")
        self.sink = sink
        self.retryable = retryable
        self.retry_after = retry_after


@runtime_checkable
class Sink(Protocol):
    """Delivers one alert revision (firing or resolved) where people look; raises SinkError."""

    @property
    def name(self) -> str: ...

    async def deliver(self, alert: Alert) -> None: ...
