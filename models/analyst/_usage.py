"""What the LLM costs: tokens and calls per process (`UsageTotals`, read by the metrics), and the
histogram of call seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Histogram

__all__ = ["CALL_SECONDS_BUCKETS", "UsageTotals"]


#: Seconds per LLM call, from a fast local model to a slow remote one.
CALL_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)


def _call_histogram() -> Histogram:
    from prometheus_client import Histogram

    return Histogram(
        "sluice_llm_call_seconds",
        "time per LLM call, failed calls included",
        buckets=CALL_SECONDS_BUCKETS,
        registry=None,  # the process's metrics collector reads it from here
    )


@dataclass
class UsageTotals:
    """Counters exported as metrics (`/metrics` of the worker, the summary of `sluice scan`)."""

    calls: int = 0
    retries: int = 0
    failures: int = 0
    degraded: int = 0
    repairs: int = 0
    ungrounded: int = 0  # answers naming what the bundle does not hold, after their repair
    format_rejections: int = 0  # requests whose structured-output mode the endpoint refused
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    call_seconds: Histogram = field(default_factory=_call_histogram)
