"""`sluice worker`: the filter stage (aiokafka) and the analysis stage (Faust) in one process.

A model watcher reads the `models` topic beside them and hands every activation to the filter
stage, which swaps models between batches (hot swap, no restart); an outcome watcher keeps the
recall estimate of every model version; `/metrics` serves both on the web port.

The filter stage runs as a service of the Faust worker, on the same event loop: it shares the
process's start, stop and logging with the analysis stage, and needs no second process per core.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from stream._settings import Settings

__all__ = ["run_worker"]

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    """Build both stages and run until SIGTERM/SIGINT (Faust's worker handles the signals)."""
    import faust
    import mode

    from stream.analysis import create_app
    from stream.filtering import FilterStage, build_filter
    from stream.logs import install_repeat_filter
    from stream.metrics import CONTENT_TYPE, OutcomeWatcher, WorkerMetrics
    from stream.recall import RecallTally
    from stream.registry import ModelWatcher

    ready = asyncio.Event()
    stage = FilterStage(settings, build_filter(settings.pipeline), models_ready=ready)
    watcher = ModelWatcher(settings, lambda model, _act: stage.offer_model(model), ready)
    outcomes = OutcomeWatcher(settings, RecallTally())
    metrics = WorkerMetrics(stage.counters, watcher, outcomes.tally)
    app = create_app(settings)

    @app.page("/metrics")
    async def metrics_page(web: Any, _request: Any) -> Any:
        return web.text(metrics.render(), content_type=CONTENT_TYPE)

    class FilterStageService(mode.Service):
        """Runs the filter stage's loop; a stage that cannot go on stops the worker."""

        _stage_run: asyncio.Future[Any] | None = None
        _watch_runs: tuple[asyncio.Future[Any], ...] = ()

        async def on_start(self) -> None:
            install_repeat_filter()  # on the handlers Faust's worker has set up by now
            self._watch_runs = (
                self.add_future(self._watch("model watcher", watcher.run())),
                self.add_future(self._watch("outcome watcher", outcomes.run())),
            )
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
            runs = [f for f in (self._stage_run, *self._watch_runs) if f is not None]
            if runs:
                await asyncio.wait(runs, timeout=10)

    faust.Worker(
        app, FilterStageService(), loglevel=settings.worker.log_level
    ).execute_from_commandline()
