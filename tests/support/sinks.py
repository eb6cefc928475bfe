"""Local HTTP receivers for the sink tests: they record every request and can fail on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from sluice.models.analyst import (
    AffectedService,
    GraphEdge,
    IncidentReport,
    Provenance,
    RootCause,
)
from sluice.stream import Settings
from sluice.stream.delivery.sinks import SinkRunner, create_sink
from sluice.stream.records import Alert

T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)


def alert(revision: int = 0, status: str = "firing", severity: str = "high") -> Alert:
    """An alert revision of one incident (payment-service as its root cause)."""
    report = IncidentReport(
        scope="shop",
        is_incident=status == "firing",
        severity=severity,  # type: ignore[arg-type]
        title="payment-service refuses connections",
        summary=f"checkout fails: payment-service refuses connections (revision {revision})",
        first_seen=T0,
        last_seen=T0,
        affected_services=[
            AffectedService(service="payment-service", role="root_cause", evidence="T1 x40"),
            AffectedService(service="checkout", role="impacted", evidence="T2 x12"),
        ],
        service_graph=[],
        root_causes=[RootCause(service="payment-service", description="refused", confidence=0.8)],
        recommendations=["restart payment-service"],
    )
    return Alert(
        fingerprint=report.fingerprint(),
        revision=revision,
        status=status,  # type: ignore[arg-type]
        report=report,
        provenance=Provenance(analysis="heuristic", filter_version="v1"),
        evidence={"T1": "connection refused"},
        generated_at=T0.replace(minute=revision + 1),
    )


@dataclass
class Receiver:
    """Answers `fail_first` requests with `fail_status`, then 202; keeps what it accepted."""

    fail_first: int = 0
    fail_status: int = 503
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    accepted: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0
    _runner: Any = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        entry = (request.path, dict(request.headers), body)
        self.requests.append(entry)
        if len(self.requests) <= self.fail_first:
            return web.Response(status=self.fail_status, text="unavailable (test)")
        self.accepted.append(entry)
        return web.Response(status=202, text="ok")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _pointed_at(settings: Settings, bases: dict[str, str]) -> Settings:
    """The settings with each named sink's endpoint on its local receiver."""
    urls = {
        "slack": {"slack_webhook_url": SecretStr(bases.get("slack", "") + "/services/T0/SECRET")},
        "pagerduty": {"pagerduty_url": bases.get("pagerduty", "") + "/v2/enqueue"},
        "alertmanager": {"alertmanager_url": bases.get("alertmanager", "")},
        "webhook": {"webhook_url": SecretStr(bases.get("webhook", "") + "/hook")},
    }
    update = {k: v for name in bases for k, v in urls[name].items()}
    return settings.model_copy(update={"sinks": settings.sinks.model_copy(update=update)})


async def run_sinks(
    settings: Settings,
    receivers: dict[str, Receiver],
    done: Callable[[list[SinkRunner]], bool],
    timeout: float,
) -> list[SinkRunner]:
    """One SinkRunner per named receiver (real consumers of the alerts topic) until `done`."""
    bases = {name: await r.start() for name, r in receivers.items()}
    run_settings = _pointed_at(settings, bases)
    try:
        async with aiohttp.ClientSession() as session:
            runners = [
                SinkRunner(run_settings, create_sink(name, run_settings.sinks, session))  # type: ignore[arg-type]
                for name in receivers
            ]
            tasks = [asyncio.ensure_future(r.run()) for r in runners]
            try:
                async with asyncio.timeout(timeout):
                    while not done(runners):
                        failed = [t for t in tasks if t.done()]
                        assert not failed, [t.exception() for t in failed]
                        await asyncio.sleep(0.2)
            finally:
                for r in runners:
                    r.stop()
                await asyncio.gather(*tasks)
    finally:
        for r in receivers.values():
            await r.stop()
    return runners


def with_graph(a: Alert) -> Alert:
    edges = [
        GraphEdge(source="checkout", target="payment-service", evidence="T2"),
        GraphEdge(source="frontend", target="checkout", evidence="T3"),
        GraphEdge(source="payment-service", target="checkout", evidence="cycle"),
    ]
    report = a.report.model_copy(update={"service_graph": edges})
    cost = Provenance(analysis="llm", filter_version="v1", llm_model="gpt-4o-mini",
                      prompt_tokens=1200, completion_tokens=300, cost_usd=0.0009)  # fmt: skip
    return a.model_copy(update={"report": report, "provenance": cost})
