"""The `sluice` command line. The only place that configures logging and builds Settings."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import click
from pydantic import ValidationError

from sluice.stream.cli.controls import ack, controls, silence
from sluice.stream.cli.inputs import DEMO_FILE, alerts_said, check_readable, input_file
from sluice.stream.cli.loop import (
    label,
    model_list,
    model_promote,
    model_rollback,
    model_show,
    retrain,
)
from sluice.stream.cli.model import model as model_group
from sluice.stream.cli.sinks import sink_group_cli
from sluice.stream.errors import RecordError, SettingsError, SluiceError, SluiceKafkaError
from sluice.stream.ingest.sources import Record
from sluice.stream.kafka.clients import client_config, unreachable
from sluice.stream.kafka.topics import describe_topics, ensure_topics
from sluice.stream.observe.logs import install_repeat_filter
from sluice.stream.records import RecordName, read_record
from sluice.stream.settings import Settings, check_environment, describe_settings

__all__ = ["DEMO_FILE", "cli", "main"]

log = logging.getLogger(__name__)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.version_option(package_name="sluice", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, log_level: str) -> None:
    """Sluice: a fast small model filters a log stream; an LLM analyses only what it flags.

    Every setting comes from the environment (SLUICE_ prefix, `__` between levels, for example
    SLUICE_KAFKA__BOOTSTRAP_SERVERS, SLUICE_LLM__BASE_URL, SLUICE_PIPELINE__WINDOW_S).
    """
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if log_level != "debug":  # client libraries narrate every connection at INFO
        for noisy in ("kafka", "aiokafka", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    install_repeat_filter()  # a broker outage is one line per interval, not one per retry
    try:
        check_environment(os.environ)
        ctx.obj = Settings()
    except SettingsError as exc:
        raise _fail(exc) from None
    except ValidationError as exc:  # the values are left out: one of them may be a secret
        problems = "\n".join(
            f"  SLUICE_{'__'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise click.ClickException(f"invalid settings:\n{problems}") from None
    plain = ctx.obj.kafka.security_protocol == "PLAINTEXT"  # (TLS, SASL: the log names causes)
    if log_level in ("warning", "error") and ctx.invoked_subcommand != "worker" and plain:
        # a command that cannot reach the brokers says so in one line (`unreachable`); the
        # client's own retries, logged as they happen, would only come before it
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="one JSON object per setting")
@click.pass_obj
def config(settings: Settings, as_json: bool) -> None:
    """Print the effective settings (secrets masked) and where each value came from."""
    rows = describe_settings(settings, os.environ)
    if as_json:
        for name, value, source in rows:
            click.echo(json.dumps({"setting": name, "value": value, "source": source}))
        return
    width = max(len(r[0]) for r in rows)
    for name, value, source in rows:
        click.echo(f"{name:<{width}}  {value}  [{source}]")


@cli.command()
@click.pass_obj
def worker(settings: Settings) -> None:
    """Run a stream worker (joins the consumer group; scale out by starting more)."""
    from sluice.stream.worker import run_worker

    k = settings.kafka
    click.echo(
        f"sluice worker: connecting to Kafka at {k.bootstrap_servers} (giving up after "
        f"{k.connect_timeout_s:g} s: SLUICE_KAFKA__CONNECT_TIMEOUT_S)",
        err=True,
    )
    try:
        ensure_topics(settings)
        run_worker(settings)
    except SluiceError as exc:  # Kafka, the filter model, the settings: one tree
        raise _fail(exc) from None


_DEMO_HELP = "the Train-Ticket excerpt that ships with Sluice, instead of FILE"
_SVG_HELP = "also save the terminal view of the alerts as an SVG picture"


def _console(svg: str | None) -> Any:
    """The terminal view's console (recording when an SVG of it is asked for)."""
    from rich.console import Console

    return Console(record=svg is not None, width=110 if svg else None, highlight=False)


def _save_svg(console: Any, path: str, title: str) -> None:
    """The recorded view as SVG, with local fonts only (no web font fetched when viewed)."""
    import re

    svg = console.export_svg(title=title)
    svg = re.sub(r',?\s*url\("https?://[^"]*"\) format\("[a-z0-9]+"\)', "", svg)
    Path(path).write_text(svg, encoding="utf-8")


@cli.command()
@click.argument("file", required=False)
@click.option("--demo", is_flag=True, help=_DEMO_HELP)
@click.option("--json", "as_json", is_flag=True, help="alerts as JSON lines")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "lines", "nezha"]),
    default="auto",
    show_default=True,
    help="lines: one event per line (text or JSON)",
)
@click.option(
    "--deadletter",
    type=click.Path(dir_okay=False),
    help="write records that could not be parsed here (JSON lines)",
)
@click.option("--svg", type=click.Path(dir_okay=False), help=_SVG_HELP)
@click.option(
    "--metrics/--no-metrics",
    default=False,
    show_default=True,
    help="also print the counters a worker exports on /metrics (stderr)",
)
@click.pass_obj
def scan(
    settings: Settings,
    file: str | None,
    demo: bool,
    as_json: bool,
    fmt: str,
    deadletter: str | None,
    svg: str | None,
    metrics: bool,
) -> None:
    """Run the whole pipeline on FILE (or - for stdin) in-process: no broker needed."""
    from sluice.models.analyst import create_analyst
    from sluice.models.filter import FilterError
    from sluice.stream.filtering.screen import build_filter
    from sluice.stream.ingest.sources import ReadStats, read_records
    from sluice.stream.observe.render import alert_view
    from sluice.stream.scan import scan as run_scan

    file = input_file(file, demo)
    cfg = settings.pipeline
    try:
        filt = build_filter(cfg)
    except FilterError as exc:
        raise _fail(exc) from None
    if file != "-" and not demo:
        check_readable(file)
    analyst = create_analyst(settings.llm)

    console = _console(svg)

    def emit(alert: object) -> None:
        from sluice.stream.records import Alert

        assert isinstance(alert, Alert)
        if as_json:
            click.echo(alert.model_dump_json())
        else:
            console.print(alert_view(alert))

    read = ReadStats()
    records = read_records(file, fmt, read)  # type: ignore[arg-type]
    text = cfg.text.formats(Path(file).stat().st_mtime if file != "-" else None)
    text.fallback_service = Path(file).name.split(".", 1)[0] if file != "-" and not demo else None
    progress = file != "-" and sys.stderr.isatty()
    if progress:
        records = _with_progress(records, Path(file).stat().st_size)
    from sluice.stream._gc import tune_gc

    tune_gc()  # a file is a stream too (`stream._gc`)
    started = time.perf_counter()
    result = asyncio.run(
        run_scan(
            records,
            cfg,
            filt,
            analyst,
            lambda: datetime.now(UTC),
            on_alert=emit,
            notify=lambda line: click.echo(line, err=True),
            text=text,
        )
    )
    elapsed = time.perf_counter() - started
    if svg:
        _save_svg(console, svg, "sluice scan")
    if not result.alerts and not as_json:  # the answer, where the alerts would have been
        click.echo(f"No alerts: nothing in {result.events} events looks like an incident.")
    for d in result.deadletters[:5]:
        click.echo(f"dead letter {d.topic}: {d.reason}", err=True)
    if len(result.deadletters) > 5:
        more = len(result.deadletters) - 5
        where = f"in {deadletter}" if deadletter else "with --deadletter FILE"
        click.echo(f"... and {more} more dead letters (all of them {where})", err=True)
    if deadletter:
        with open(deadletter, "w", encoding="utf-8") as fh:
            fh.writelines(d.model_dump_json() + "\n" for d in result.deadletters)
    if metrics:
        from sluice.stream.observe.metrics import PipelineMetrics, summary

        lines = summary(PipelineMetrics(result.counters, result.analysis, analyst))
        click.echo("metrics (as a worker's /metrics names them):", err=True)
        click.echo("\n".join("  " + line for line in lines), err=True)
    click.echo(
        f"scanned {result.events} events in {elapsed:.1f}s: {result.suspects} forwarded to the "
        f"{analyst.name} analyst in {result.windows} windows, {alerts_said(result.alerts)}, "
        f"{len(result.deadletters)} unparseable"
        + (f", {result.counters.joined} lines joined to the event they continue"
           if result.counters.joined else "")
        + (f", {read.blank} blank lines skipped" if read.blank else "")
        + f" (filter {filt.version})",
        err=True,
    )  # fmt: skip


def _with_progress(records: Iterable[Record], size: int) -> Iterator[Record]:
    with click.progressbar(length=size, label="scanning", file=sys.stderr) as bar:
        for rec in records:
            bar.update(len(rec[0]) + 1)
            yield rec


class _DeliveryErrors:
    """Counts failed deliveries (an errback of kafka-python's send futures); keeps the first."""

    def __init__(self) -> None:
        self.count = 0
        self.first: BaseException | None = None

    def __call__(self, exc: BaseException) -> None:
        self.count += 1
        self.first = self.first or exc


@cli.command()
@click.argument("file", required=False)
@click.option("--demo", is_flag=True, help=_DEMO_HELP)
@click.option("--topic", default=None, help="default: the events topic from settings")
@click.option("--rate", type=float, default=None, help="records per second (default: as fast)")
@click.option("--loop", is_flag=True, help="start over at the end of the file, until stopped")
@click.option("--format", "fmt", type=click.Choice(["auto", "lines", "nezha"]), default="auto")
@click.pass_obj
def produce(
    settings: Settings,
    file: str | None,
    demo: bool,
    topic: str | None,
    rate: float | None,
    loop: bool,
    fmt: str,
) -> None:
    """Replay a log file into Kafka, one record per line (or per Nezha CSV row)."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from sluice.stream.ingest.sources import read_records

    file = input_file(file, demo)
    if file != "-" and not demo:
        check_readable(file)
    topic = topic or settings.topics.events
    try:
        producer = KafkaProducer(
            **client_config(settings.kafka), linger_ms=20, max_request_size=8 * 1024 * 1024
        )
    except KafkaError as exc:
        raise click.ClickException(unreachable(settings.kafka, exc)) from None
    sent, t0 = 0, time.perf_counter()
    failed = _DeliveryErrors()  # they arrive on the send futures: never drop them silently
    try:
        while True:
            for value, key, _source in read_records(file, fmt):  # type: ignore[arg-type]
                producer.send(topic, value=value, key=key).add_errback(failed)
                sent += 1
                if rate:
                    ahead = sent / rate - (time.perf_counter() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
            if not loop:
                break
        producer.flush(timeout=180)  # the producer's own delivery timeout is 120 s
        if failed.count:
            raise click.ClickException(
                f"{failed.count} of {sent} records were not delivered to {topic}: {failed.first!r}"
            )
    except KafkaError as exc:
        raise click.ClickException(
            f"producing to {topic} failed after {sent} records: {exc}"
        ) from None
    finally:
        producer.close(timeout=10)
    click.echo(f"produced {sent} records to {topic} in {time.perf_counter() - t0:.1f}s", err=True)


@cli.command()
@click.option("--follow", "-f", is_flag=True, help="keep waiting for new alerts")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of text")
@click.option(
    "--timeout",
    type=float,
    default=5.0,
    show_default=True,
    help="without --follow: stop after this many seconds without a new alert",
)
@click.option("--svg", type=click.Path(dir_okay=False), help=_SVG_HELP)
@click.pass_obj
def alerts(
    settings: Settings, follow: bool, as_json: bool, timeout: float, svg: str | None
) -> None:
    """Print the alerts on the alerts topic (from the beginning): a live terminal view, or
    JSON lines for tools."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    from sluice.stream.observe.render import alert_view
    from sluice.stream.records import Alert

    console = _console(svg)

    try:
        probe = KafkaConsumer(**client_config(settings.kafka), enable_auto_commit=False)
        exists = settings.topics.alerts in probe.topics()
        probe.close()
    except KafkaError as exc:
        raise click.ClickException(unreachable(settings.kafka, exc)) from None
    if not exists:
        raise click.ClickException(
            f"topic {settings.topics.alerts} does not exist: run `sluice topics create`"
        )
    try:
        consumer = KafkaConsumer(
            settings.topics.alerts,
            **client_config(settings.kafka),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=-1 if follow else int(timeout * 1000),
        )
    except KafkaError as exc:
        raise click.ClickException(unreachable(settings.kafka, exc)) from None
    try:
        for msg in consumer:
            try:
                alert = read_record(Alert, msg.value)
            except RecordError as exc:
                click.echo(f"skipping offset {msg.partition}:{msg.offset}: {exc}", err=True)
                continue
            if as_json:
                click.echo(alert.model_dump_json())
            else:
                console.print(alert_view(alert))
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        if svg:
            _save_svg(console, svg, "sluice alerts")


@cli.command()
@click.argument("record", type=click.Choice(get_args(RecordName)))
def schema(record: str) -> None:
    """Print the JSON Schema of a wire record."""
    from sluice.stream.records import record_schema

    click.echo(json.dumps(record_schema(record), indent=2))  # type: ignore[arg-type]


@cli.group()
def llm() -> None:
    """The LLM endpoint: what it offers and what Sluice will use of it."""


@llm.command("check")
@click.option("--json", "as_json", is_flag=True, help="the findings as one JSON object")
@click.pass_obj
def llm_check(settings: Settings, as_json: bool) -> None:
    """Probe SLUICE_LLM__*: reachable, key, model, context window, structured-output mode, and
    one small analysis (seconds, tokens). Exit status 0: usable, or none configured (the
    offline analyst, the default); 1: answers off-schema; 2: not usable."""
    from dataclasses import asdict

    from sluice.models.analyst._check import check_endpoint

    found = asyncio.run(check_endpoint(settings.llm))
    if as_json:
        click.echo(json.dumps({k: v for k, v in asdict(found).items() if k != "lines"}))
    else:
        click.echo("\n".join(found.lines))
    sys.exit({"ok": 0, "offline": 0, "degraded": 1, "failed": 2}[found.verdict])


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
        raise _fail(exc) from None
    click.echo(f"created: {', '.join(created)}" if created else "all topics exist")


@topics.command("describe")
@click.pass_obj
def topics_describe(settings: Settings) -> None:
    """Print each topic's partitions and cleanup policy as JSON lines."""
    for row in describe_topics(settings):
        click.echo(json.dumps(row))


cli.add_command(sink_group_cli)
cli.add_command(ack)
cli.add_command(silence)
cli.add_command(controls)
cli.add_command(model_group)
cli.add_command(retrain)
cli.add_command(label)
for _command in (model_list, model_show, model_promote, model_rollback):
    model_group.add_command(_command)


def main() -> None:
    cli(prog_name="sluice")
