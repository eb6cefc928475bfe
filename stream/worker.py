"""`sluice worker`: the filter stage (aiokafka) and the analysis stage (Faust) in one process, or
one of them (`worker.stages`: a deployment that gives each stage its own cores runs both kinds).

A model watcher reads the `models` topic beside them and hands every activation to the filter
stage, which swaps models between batches (hot swap, no restart); an outcome watcher keeps the
recall estimate of every model version; a controls watcher keeps the acks and silences that the
analysis stage marks alerts with; a verdict follower reads `feedback` into the filter stage's
per-template verdicts (`stream.verdicts`), which decide their templates within seconds of being
given, without a retrain. The web port serves `/metrics`, the probes and the status page
(`/status`, fed by the tail of the alerts topic).

The filter stage runs as a service of the Faust worker, on the same event loop: it shares the
process's start, stop and logging with the analysis stage, and needs no second process per core.
Alone, it runs on a plain event loop (`_run_filter_only`), the web port on aiohttp: Faust's
loop, timers and consumer would only take from its core.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sluice.stream.settings import Settings

if TYPE_CHECKING:
    from sluice.stream.analysis import AnalysisProgress
    from sluice.stream.filtering.stage import FilterStage

__all__ = ["HEALTH_PATH", "READY_PATH", "Health", "run_worker"]

#: The liveness and readiness paths on the worker's web port (the container's HEALTHCHECK and
#: the Kubernetes probes use them; tests/test_deploy.py checks that they match).
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"

log = logging.getLogger(__name__)


class Health:
    """Liveness means progress, not an answering web server: a worker is dead when one of its
    stages has had lag for `stall_timeout_s` without progress (the filter stage: no commit; the
    analysis stage: no record handled). Readiness: the filter stage has joined its group
    (partitions assigned, maybe none) and scores with the active model; a worker of the
    analysis stage alone, once that stage has joined its group."""

    def __init__(
        self,
        stage: FilterStage | None,
        stall_timeout_s: float,
        analysis: AnalysisProgress | None = None,
    ) -> None:
        self._stage = stage
        self._analysis = analysis
        self._timeout = stall_timeout_s

    def live(self) -> tuple[bool, str]:
        said: list[str] = []
        for name, stage, what in (("", self._stage, "commit"),
                                  ("analysis ", self._analysis, "record handled")):  # fmt: skip
            if stage is None:
                continue
            stalled, lag = stage.stalled_s(), sum(stage.lag().values())
            if stalled >= self._timeout:
                return False, f"stalled: {name}lag {lag} and no {what} for {stalled:.0f} s"
            said.append(f"{name}lag {lag}")
        return True, "ok: " + "; ".join(said)

    def ready(self) -> tuple[bool, str]:
        if self._stage is None:
            if self._analysis is not None and not self._analysis.joined:
                return False, "not ready: no partitions assigned yet"
            return True, "ready: the analysis stage"
        if not self._stage.joined:
            return False, "not ready: no partitions assigned yet"
        if not self._stage.model_loaded:
            return False, "not ready: waiting for the active model"
        return True, f"ready: model {self._stage.counters.model_version}"


@dataclass
class _Page:
    """One page of the worker's web port: its text, status, content type and headers."""

    body: str
    status: int = 200
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)


class _Service(Protocol):
    """A reader beside the stages (model watcher, followers): run until stopped."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


def run_worker(settings: Settings) -> None:
    """Build the stages `worker.stages` names and run until SIGTERM/SIGINT."""
    import faust
    import mode

    from sluice.models.analyst import create_analyst
    from sluice.stream._gc import tune_gc
    from sluice.stream.analysis import AnalysisCounters, AnalysisProgress, create_app, open_windows
    from sluice.stream.delivery.controls import ControlsWatcher
    from sluice.stream.filtering.counters import StageCounters
    from sluice.stream.filtering.screen import build_filter
    from sluice.stream.filtering.stage import FilterStage
    from sluice.stream.kafka.followers import TopicFollower
    from sluice.stream.learning.recall import RecallTally
    from sluice.stream.learning.registry import ModelWatcher
    from sluice.stream.learning.watcher import OutcomeWatcher
    from sluice.stream.observe.logs import install_repeat_filter
    from sluice.stream.observe.metrics import CONTENT_TYPE, PipelineMetrics, WorkerProbes
    from sluice.stream.observe.status import (
        CONTENT_SECURITY_POLICY,
        STATUS_PATH,
        AlertBoard,
        StatusPage,
    )

    filtering, analysing = settings.worker.stages in ("both", "filter"), \
        settings.worker.stages in ("both", "analysis")  # fmt: skip
    services: dict[str, _Service] = {}
    stage: FilterStage | None = None
    watcher: ModelWatcher | None = None
    if filtering:
        ready = asyncio.Event()
        stage = FilterStage(settings, build_filter(settings.pipeline), models_ready=ready)
        offer = stage.offer_model
        watcher = ModelWatcher(settings, lambda model, _act: offer(model), ready)
        services["model watcher"] = watcher
        # Verdicts on `feedback` decide their templates in this worker's filter stage at once.
        if stage.verdicts is not None:
            feed = TopicFollower(settings, settings.topics.feedback, "sluice-verdicts",
                                 stage.verdicts.apply_bytes)  # fmt: skip
            stage.verdicts_ready = feed.loaded
            services["verdicts"] = feed
    outcomes = OutcomeWatcher(settings, RecallTally())
    services["outcome watcher"] = outcomes
    analyst = create_analyst(settings.llm)
    analysis = AnalysisCounters()
    app: faust.App | None = None
    progress: AnalysisProgress | None = None
    if analysing:
        controls = ControlsWatcher(settings)
        services["controls watcher"] = controls
        progress = AnalysisProgress(settings.topics.suspects)
        app = create_app(settings, analyst=analyst, counters=analysis,
                         controls=controls.controls, progress=progress)  # fmt: skip
    windows = (lambda: open_windows(app, settings)) if app is not None else (lambda: 0)
    probes = WorkerProbes(stage, watcher, outcomes.tally, windows, progress)
    counters = stage.counters if stage is not None else StageCounters()
    metrics = PipelineMetrics(counters, analysis, analyst, probes)
    health = Health(stage, settings.worker.stall_timeout_s, progress)
    board = AlertBoard()
    services["status page's alerts"] = TopicFollower(
        settings, settings.topics.alerts, "sluice-status", board.add, tail=200
    )
    status = StatusPage(metrics, board, settings.kafka.instance_id or socket.gethostname())

    def probe(check: Any) -> _Page:
        ok, text = check()
        return _Page(text + "\n", 200 if ok else 503)

    pages: dict[str, Any] = {
        STATUS_PATH: lambda: _Page(status.render(), content_type="text/html", headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-store"}),
        "/metrics": lambda: _Page(metrics.render(), content_type=CONTENT_TYPE),
        HEALTH_PATH: lambda: probe(health.live),
        READY_PATH: lambda: probe(health.ready),
    }  # fmt: skip
    tune_gc()  # everything is built: freeze it, and collect at a streaming pace
    if app is None:  # the filter stage alone: no Faust, its event loop all the stage's
        assert stage is not None
        asyncio.run(_run_filter_only(settings, stage, services, pages, status.sample))
        return

    for path, page in pages.items():
        app.page(path)(_faust_page(page))

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def sample_throughput() -> None:
        status.sample()

    class FilterStageService(mode.Service):
        """Runs the filter stage's loop (when this worker has it) and the readers beside the
        stages; one that cannot go on stops the worker."""

        _runs: tuple[asyncio.Future[Any], ...] = ()

        async def on_start(self) -> None:
            install_repeat_filter()  # on the handlers Faust's worker has set up by now
            self._runs = tuple(
                self.add_future(self._watch(name, svc.run())) for name, svc in services.items()
            )
            if stage is not None:
                self._runs += (self.add_future(self._watch("filter stage", stage.run())),)

        async def _watch(self, name: str, run: Any) -> None:
            try:
                await run
            except Exception as exc:
                log.exception("the %s stopped", name)
                await self.crash(exc)

        async def on_stop(self) -> None:
            if stage is not None:
                stage.stop()
            for svc in services.values():
                svc.stop()
            if self._runs:
                await asyncio.wait(self._runs, timeout=10)

    faust.Worker(
        app, FilterStageService(), loglevel=settings.worker.log_level
    ).execute_from_commandline()


def _faust_page(page: Any) -> Any:
    async def handler(web: Any, _request: Any) -> Any:
        p = page()
        if p.content_type == "text/html":
            return web.html(p.body, status=p.status, headers=p.headers)
        return web.text(p.body, status=p.status, content_type=p.content_type, headers=p.headers)

    return handler


async def _run_filter_only(
    settings: Settings,
    stage: FilterStage,
    services: dict[str, _Service],
    pages: dict[str, Any],
    sample: Any,
) -> None:
    """The filter stage and its readers on a plain event loop, the web port on aiohttp; SIGTERM
    and SIGINT stop the stage, which commits what it acknowledged."""
    import signal

    from aiohttp import web

    from sluice.stream.observe.logs import install_repeat_filter

    levels = {"warn": "WARNING", "crit": "CRITICAL"}
    logging.basicConfig(
        level=levels.get(settings.worker.log_level, settings.worker.log_level.upper()),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s",
    )
    install_repeat_filter()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    runner: web.AppRunner | None = None
    if settings.worker.web_port is not None:
        webapp = web.Application()
        for path, page in pages.items():
            webapp.router.add_get(path, _aiohttp_page(page))
        runner = web.AppRunner(webapp, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, port=settings.worker.web_port).start()
    runs: dict[asyncio.Task[Any], str] = {
        asyncio.create_task(svc.run()): name for name, svc in services.items()
    }
    runs[asyncio.create_task(stage.run())] = "filter stage"
    ticks = asyncio.create_task(_every(5.0, sample))
    stop = asyncio.create_task(stopping.wait())
    log.info("filter stage alone (worker.stages=filter)")
    done, _ = await asyncio.wait([stop, *runs], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in done if t in runs]
    stage.stop()
    for svc in services.values():
        svc.stop()
    await asyncio.wait(runs, timeout=30)
    ticks.cancel()
    if runner is not None:
        await runner.cleanup()
    for task in failed:
        exc = task.exception()
        log.error("the %s stopped%s", runs[task], f": {exc!r}" if exc else "", exc_info=exc)
    if failed:
        raise SystemExit(1)


async def _every(interval_s: float, fun: Any) -> None:
    while True:
        await asyncio.sleep(interval_s)
        fun()


def _aiohttp_page(page: Any) -> Any:
    from aiohttp import web

    async def handler(_request: Any) -> web.Response:
        p = page()
        headers = {**p.headers, "Content-Type": f"{p.content_type}; charset=utf-8"}
        return web.Response(body=p.body.encode(), status=p.status, headers=headers)

    return handler
