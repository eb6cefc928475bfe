"""`sluice sink list` and `sluice sink run NAME`: deliver the alerts topic to one sink."""

from __future__ import annotations

import asyncio
import logging
import signal

import click

from sluice.stream.settings import SINK_NAMES, Settings, SinkName

__all__ = ["sink_group_cli"]

log = logging.getLogger(__name__)


@click.group("sink")
def sink_group_cli() -> None:
    """Deliver alerts to Slack, PagerDuty, Alertmanager or a webhook."""


@sink_group_cli.command("list")
@click.pass_obj
def sink_list(settings: Settings) -> None:
    """The sinks and whether each is configured (secrets are never printed)."""
    for name in SINK_NAMES:
        missing = settings.sinks.missing(name)
        state = f"not configured: set {missing}" if missing else "configured"
        click.echo(f"{name:13s} {state}")


@sink_group_cli.command("run")
@click.argument("name", type=click.Choice(SINK_NAMES))
@click.pass_obj
def sink_run(settings: Settings, name: SinkName) -> None:
    """Deliver every alert revision to sink NAME until stopped (SIGTERM, Ctrl-C)."""
    from aiokafka.errors import KafkaError

    from sluice.stream.delivery.sinks import SinkError

    try:
        asyncio.run(_run(settings, name))
    except SinkError as exc:
        raise click.ClickException(str(exc)) from None
    except KafkaError as exc:  # the uncommitted record is delivered again at the next start
        raise click.ClickException(f"sink {name}: Kafka failed: {exc!r}") from None


async def _run(settings: Settings, name: SinkName) -> None:
    import aiohttp

    from sluice.stream.delivery.sinks import SinkRunner, create_sink

    async with aiohttp.ClientSession() as session:
        runner = SinkRunner(settings, create_sink(name, settings.sinks, session))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        await runner.run()
    log.info("sink %s stopped: %d delivered, %d retries, %d dead letters", name,
             runner.delivered, runner.retries, runner.dead)  # fmt: skip
