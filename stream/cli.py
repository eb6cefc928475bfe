"""The `sluice` command line. The only place that configures logging and builds Settings."""

from __future__ import annotations

import json
import logging
import sys

import click
from pydantic import ValidationError

from models.filter._cli import model as model_group
from stream._kafka import SluiceKafkaError, describe_topics, ensure_topics
from stream._settings import Settings

__all__ = ["main"]

log = logging.getLogger(__name__)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.pass_context
def cli(ctx: click.Context, log_level: str) -> None:
    """Sluice: a fast small model filters a log stream; an LLM analyses only what it flags.

    Every setting comes from the environment (SLUICE_ prefix, `__` between levels, for example
    SLUICE_KAFKA__BOOTSTRAP_SERVERS or SLUICE_LLM__API_KEY).
    """
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if log_level != "debug":  # client libraries narrate every connection at INFO
        for noisy in ("kafka", "aiokafka"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        ctx.obj = Settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid settings:\n{exc}") from None


@cli.command()
@click.pass_obj
def worker(settings: Settings) -> None:
    """Run a stream worker (joins the consumer group; scale out by starting more)."""
    import faust

    from stream._app import create_app

    try:
        ensure_topics(settings)
    except SluiceKafkaError as exc:
        raise click.ClickException(str(exc)) from None
    app = create_app(settings)
    faust.Worker(app, loglevel=settings.worker.log_level).execute_from_commandline()


@cli.group()
def topics() -> None:
    """Create or describe Sluice's topics."""


@topics.command("create")
@click.pass_obj
def topics_create(settings: Settings) -> None:
    """Create the missing topics (partitions, retention and compaction from settings)."""
    try:
        created = ensure_topics(settings)
    except SluiceKafkaError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created: {', '.join(created)}" if created else "all topics exist")


@topics.command("describe")
@click.pass_obj
def topics_describe(settings: Settings) -> None:
    """Print each topic's partitions and cleanup policy as JSON lines."""
    for row in describe_topics(settings):
        click.echo(json.dumps(row))


cli.add_command(model_group)


def main() -> None:
    cli(prog_name="sluice")
