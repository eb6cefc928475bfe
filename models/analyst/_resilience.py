"""Circuit breaker and retry delays for calls to the LLM endpoint."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["CircuitBreaker", "backoff_delay"]

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Opens after `failures` consecutive failures; after `reset_s` lets one probe through."""

    def __init__(
        self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failures
        self._reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self._reset_s:
            return "half_open"
        return "open"

    def hold_open(self) -> None:
        """Open for good: no call goes out again (`sluice scan`, once the endpoint is down)."""
        self._opened_at, self._reset_s = self._clock(), float("inf")

    def allow(self) -> bool:
        """May a call go out now? In half-open state, only one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self._failures, self._opened_at, self._probing = 0, None, False

    def failure(self) -> None:
        self._probing = False
        self._failures += 1
        if self._failures >= self._threshold or self._opened_at is not None:
            self._opened_at = self._clock()


def backoff_delay(
    attempt: int,
    base_s: float,
    max_s: float,
    retry_after: float | None,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with full jitter; a server's Retry-After wins when it asks for more."""
    r = rng or random
    delay = r.uniform(0, min(max_s, base_s * (2**attempt)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_s))
    return delay
