"""`sluice worker`: the filter stage (aiokafka) and the analysis stage (Faust) in one process.

A model watcher reads the `models` topic beside them and hands every activation to the filter
stage, which swaps models between batches (hot swap, no restart); an outcome watcher keeps the
recall estimate of every model version; a controls watcher keeps the acks and silences that the
analysis stage marks alerts with; a verdict follower reads `feedback` into the filter stage's
per-template verdicts (`stream.verdicts`), which decide their templates within seconds of being
given, without a retrain. The web port serves `/metrics`, the probes and the status page
(`/status`, fed by the tail of the alerts topic).

The filter stage runs as a service of the Faust worker, on the same event loop: it shares the
process's start, stop and logging with the analysis stage, and needs no second process per core.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

from sluice.stream.settings import Settings

if TYPE_CHECKING:
    from sluice.stream.filtering.stage import FilterStage

__all__ = ["HEALTH_PATH", "READY_PATH", "Health", "run_worker"]

#: The liveness and readiness paths on the worker's web port (the container's HEALTHCHECK and
#: the Kubernetes probes use them; tests/test_deploy.py checks that they match).
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"

log = logging.getLogger(__name__)


class Health:
    """Liveness means progress, not an answering web server: a worker is dead when its filter
    stage has had lag for `stall_timeout_s` without committing anything. Readiness: the stage
    has joined its group (partitions assigned, maybe none) and scores with the active model."""

    def __init__(self, stage: FilterStage, stall_timeout_s: float) -> None:
        self._stage = stage
        self._timeout = stall_timeout_s

    def live(self) -> tuple[bool, str]:
        stalled = self._stage.stalled_s()
        lag = sum(self._stage.lag().values())
        if stalled >= self._timeout:
            return False, f"stalled: lag {lag} and no commit for {stalled:.0f} s"
        return True, f"ok: lag {lag}"

    def ready(self) -> tuple[bool, str]:
        if not self._stage.joined:
            return False, "not ready: no partitions assigned yet"
        if not self._stage.model_loaded:
            return False, "not ready: waiting for the active model"
        return True, f"ready: model {self._stage.counters.model_version}"


def run_worker(settings: Settings) -> None:
    """Build both stages and run until SIGTERM/SIGINT (Faust's worker handles the signals)."""
    import faust
    import mode

    from sluice.models.analyst import create_analyst
    from sluice.stream.analysis import AnalysisCounters, create_app, open_windows
    from sluice.stream.delivery.controls import ControlsWatcher
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

    ready = asyncio.Event()
    stage = FilterStage(settings, build_filter(settings.pipeline), models_ready=ready)
    watcher = ModelWatcher(settings, lambda model, _act: stage.offer_model(model), ready)
    outcomes = OutcomeWatcher(settings, RecallTally())
    # Verdicts on `feedback` decide their templates in this worker's filter stage at once.
    verdicts = stage.verdicts
    verdict_feed = (
        TopicFollower(settings, settings.topics.feedback, "sluice-verdicts", verdicts.apply_bytes)
        if verdicts is not None
        else None
    )
    if verdict_feed is not None:
        stage.verdicts_ready = verdict_feed.loaded
    controls = ControlsWatcher(settings)
    analyst = create_analyst(settings.llm)
    analysis = AnalysisCounters()
    app = create_app(settings, analyst=analyst, counters=analysis, controls=controls.controls)
    probes = WorkerProbes(stage, watcher, outcomes.tally, lambda: open_windows(app, settings))
    metrics = PipelineMetrics(stage.counters, analysis, analyst, probes)
    health = Health(stage, settings.worker.stall_timeout_s)
    board = AlertBoard()
    recent = TopicFollower(settings, settings.topics.alerts, "sluice-status", board.add, tail=200)
    status = StatusPage(metrics, board, settings.kafka.instance_id or socket.gethostname())

    @app.page(STATUS_PATH)
    async def status_page(web: Any, _request: Any) -> Any:
        headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-store"}
        return web.html(status.render(), headers=headers)

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def sample_throughput() -> None:
        status.sample()

    @app.page("/metrics")
    async def metrics_page(web: Any, _request: Any) -> Any:
        return web.text(metrics.render(), content_type=CONTENT_TYPE)

    @app.page(HEALTH_PATH)
    async def healthz(web: Any, _request: Any) -> Any:
        ok, text = health.live()
        return web.text(text + "\n", status=200 if ok else 503)

    @app.page(READY_PATH)
    async def readyz(web: Any, _request: Any) -> Any:
        ok, text = health.ready()
        return web.text(text + "\n", status=200 if ok else 503)

    class FilterStageService(mode.Service):
        """Runs the filter stage's loop; a stage that cannot go on stops the worker."""

        _stage_run: asyncio.Future[Any] | None = None
        _watch_runs: tuple[asyncio.Future[Any], ...] = ()

        async def on_start(self) -> None:
            install_repeat_filter()  # on the handlers Faust's worker has set up by now
            self._watch_runs = (
                self.add_future(self._watch("model watcher", watcher.run())),
                self.add_future(self._watch("outcome watcher", outcomes.run())),
                self.add_future(self._watch("controls watcher", controls.run())),
                self.add_future(self._watch("status page's alerts", recent.run())),
            )
            if verdict_feed is not None:
                self._watch_runs += (self.add_future(self._watch("verdicts", verdict_feed.run())),)
            self._stage_run = self.add_future(self._consume())

        async def _watch(self, name: str, run: Any) -> None:
            try:
                await run
            except Exception as exc:
                log.exception("the %s stopped", name)
                await self.crash(exc)

        async def _consume(self) -> None:
            try:
                await stage.run()
            except Exception as exc:
                log.exception("the filter stage stopped")
                await self.crash(exc)

        async def on_stop(self) -> None:
            stage.stop()
            watcher.stop()
            outcomes.stop()
            controls.stop()
            recent.stop()
            if verdict_feed is not None:
                verdict_feed.stop()
            runs = [f for f in (self._stage_run, *self._watch_runs) if f is not None]
            if runs:
                await asyncio.wait(runs, timeout=10)

    faust.Worker(
        app, FilterStageService(), loglevel=settings.worker.log_level
    ).execute_from_commandline()
