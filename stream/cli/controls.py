"""`sluice ack`, `sluice silence` and `sluice controls`: people's word on alerts, on a topic."""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC, datetime

import click

from sluice.stream.records import Ack, Silence
from sluice.stream.settings import Settings

__all__ = ["ack", "controls", "silence"]


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "unknown"


def _send(settings: Settings, rec: Ack | Silence) -> None:
    from sluice.stream.delivery.controls import send_control
    from sluice.stream.errors import ControlError

    try:
        send_control(settings, rec)
    except ControlError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.argument("fingerprint")
@click.option("--note", help="what you are doing about it (shown with the alert)")
@click.option("--by", help="who acknowledges (default: your user name)")
@click.pass_obj
def ack(settings: Settings, fingerprint: str, note: str | None, by: str | None) -> None:
    """Acknowledge the firing alert FINGERPRINT: workers publish it as acknowledged, PagerDuty
    stops paging for it; its next firing episode (after it resolves) pages again."""
    rec = Ack(fingerprint=fingerprint, by=_who(by), note=note, at=datetime.now(UTC))
    _send(settings, rec)
    click.echo(f"acknowledged {fingerprint} as {rec.by}")


@click.command()
@click.argument("target")
@click.option(
    "--for", "duration", required=True, help="how long: 2h, 30m, 1h30m, 1d; 0s lifts a silence"
)
@click.option("--note", help="why (shown by `sluice controls`)")
@click.option("--by", help="who silences (default: your user name)")
@click.pass_obj
def silence(
    settings: Settings, target: str, duration: str, note: str | None, by: str | None
) -> None:
    """Silence TARGET, a scope or a service, for a while: no sink notifies about alerts in that
    scope or naming that service until then (resolutions still go out)."""
    from sluice.stream.delivery.controls import parse_duration

    try:
        length = parse_duration(duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--for") from None
    now = datetime.now(UTC)
    rec = Silence(target=target, until=now + length, by=_who(by), note=note, at=now)
    _send(settings, rec)
    if length:
        click.echo(f"silenced {target} until {rec.until:%Y-%m-%d %H:%M:%S} UTC")
    else:
        click.echo(f"lifted the silence on {target}")


@click.command()
@click.pass_obj
def controls(settings: Settings) -> None:
    """The silences still running and every acknowledgement, from the controls topic."""
    from sluice.stream.delivery.controls import ControlsWatcher

    async def read() -> ControlsWatcher:
        watcher = ControlsWatcher(settings)
        run = asyncio.ensure_future(watcher.run())
        await asyncio.wait(
            {run, asyncio.ensure_future(watcher.loaded.wait())},
            return_when=asyncio.FIRST_COMPLETED,
        )
        watcher.stop()
        await run
        return watcher

    from aiokafka.errors import KafkaError

    from sluice.stream.errors import SluiceKafkaError
    from sluice.stream.kafka.clients import unreachable

    try:
        watcher = asyncio.run(read())
    except SluiceKafkaError as exc:
        raise click.ClickException(str(exc)) from None
    except KafkaError as exc:
        raise click.ClickException(unreachable(settings.kafka, exc)) from None
    now = datetime.now(UTC)
    acks, silences = watcher.controls.active(now)
    for s in silences:
        note = f"  ({s.note})" if s.note else ""
        click.echo(f"silence  {s.target}  until {s.until:%Y-%m-%d %H:%M} UTC  by {s.by}{note}")
    for a in acks:
        note = f"  ({a.note})" if a.note else ""
        click.echo(f"ack      {a.fingerprint}  at {a.at:%Y-%m-%d %H:%M} UTC  by {a.by}{note}")
    if not acks and not silences:
        click.echo("no silences running, no acknowledgements")
