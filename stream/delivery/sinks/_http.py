"""One JSON POST with the status mapped to SinkError: what every HTTP sink shares."""

from __future__ import annotations

from typing import Any

from sluice.stream.errors import SinkError

__all__ = ["post_json"]


async def post_json(
    sink: str,
    session: Any,
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> None:
    """POST body (JSON) to url; 2xx is delivered, 408/425/429/5xx and network errors retryable.

    The URL is never part of an error: webhook URLs carry their secret in the path."""
    import aiohttp

    try:
        async with session.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", **(headers or {})},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            if 200 <= resp.status < 300:
                return
            text = (await resp.text())[:200]
            retry_after = _seconds(resp.headers.get("Retry-After"))
    except TimeoutError:
        raise SinkError(sink, f"no answer in {timeout_s} s", retryable=True) from None
    except aiohttp.ClientError as exc:
        raise SinkError(sink, f"connection failed: {type(exc).__name__}", retryable=True) from None
    retryable = resp.status in (408, 425, 429) or resp.status >= 500
    raise SinkError(
        sink, f"HTTP {resp.status}: {text}", retryable=retryable, retry_after=retry_after
    )


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
