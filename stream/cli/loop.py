"""The learning loop's commands: `sluice retrain`, `sluice label`, `sluice model list|show|...`.

Heavy modules (ONNX Runtime, scikit-learn, Kafka clients) are imported inside the commands.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sluice.stream.errors import SluiceError
from sluice.stream.settings import Settings

if TYPE_CHECKING:
    from sluice.models.filter import Example, FilterModel
    from sluice.stream.learning.registry import Registry

__all__ = ["label", "model_list", "model_promote", "model_rollback", "model_show", "retrain"]


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in a bare container: still say it was a person
        return "unknown"


def _champion(settings: Settings, reg: Registry) -> tuple[FilterModel, bool]:
    """The active model of the registry, else the configured one (and whether it is published)."""
    from sluice.models.filter import FilterModel
    from sluice.stream.filtering.screen import build_filter

    if reg.active is not None and reg.active.version in reg.entries:
        e = reg.entries[reg.active.version]
        return FilterModel(e.data, source=f"{settings.topics.models}:{e.version}"), True
    return build_filter(settings.pipeline).model, False


@click.command()
@click.option("--watch", is_flag=True, help="keep running: retrain when --min-new labels arrived")
@click.option("--min-new", type=click.IntRange(min=1), default=None, help="[retrain.min_new]")
@click.option(
    "--report",
    type=click.Path(file_okay=False, path_type=Path),
    help="write a PNG of recall and forward ratio against threshold here",
)
@click.option(
    "--base",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="labeled lines to train on with the feedback [retrain.base_data]",
)
@click.option("--dry-run", is_flag=True, help="train and compare, publish nothing")
@click.pass_obj
def retrain(
    settings: Settings,
    watch: bool,
    min_new: int | None,
    report: Path | None,
    base: Path | None,
    dry_run: bool,
) -> None:
    """Train a challenger on the feedback topic; publish it if it beats the active model."""
    from sluice.models.filter import read_examples
    from sluice.stream.kafka.topics import records_written

    cfg = settings.retrain
    path = base or cfg.base_data
    try:
        examples = read_examples(path) if path else []
        _retrain_once(settings, examples, report, dry_run)
        if not watch:
            return
        need = min_new or cfg.min_new
        last = records_written(settings, settings.topics.feedback)
        click.echo(f"watching {settings.topics.feedback}: retraining every {need} new labels")
        while True:
            time.sleep(5)
            now = records_written(settings, settings.topics.feedback)
            if now - last >= need:
                click.echo(f"{now - last} new labels")
                last = now
                _retrain_once(settings, examples, report, dry_run)
    except SluiceError as exc:  # filter and registry errors included (one tree)
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


def _retrain_once(
    settings: Settings, base: list[Example], report: Path | None, dry_run: bool
) -> None:
    from sluice.stream.learning.registry import publish_model, read_registry
    from sluice.stream.learning.retrain import read_feedback, retrain, write_report

    reg = read_registry(settings)
    champion, published = _champion(settings, reg)
    feedback = read_feedback(settings)
    steps = ["labels", "train", "compare", "refit"]
    with click.progressbar(length=len(steps), label="retraining", file=sys.stderr) as bar:

        def step(name: str) -> None:
            bar.label = f"retraining: {name}"
            bar.update(1)

        result = retrain(champion, feedback, settings.retrain, base=base, step=step)
    click.echo(f"{len(feedback)} feedback records, {result.labels} labelled templates")
    if result.challenger is None or result.comparison is None:
        click.echo(f"no challenger: {result.reason}; {champion.version} stays active")
        return
    cmp, challenger = result.comparison, result.challenger
    click.echo(cmp.table(champion.version, challenger.version))
    if report:
        click.echo(f"report: {write_report(report, champion, challenger, result.held_out)}")
    verdict = "publish" if cmp.accepted else "keep the champion"
    click.echo(f"decision: {verdict} ({cmp.reason})")
    if not cmp.accepted or dry_run:
        return
    who = f"sluice retrain ({_who()})"
    if not published:  # the workers' starting model goes in first, so rollback can return to it
        publish_model(settings, champion, {"published_by": who, "note": "the configured model"},
                      activate_as="promote", by=who, registry=reg)  # fmt: skip
        reg = read_registry(settings)
    info: dict[str, Any] = {
        "published_by": who,
        "labels": result.labels,
        "trained_on": result.trained_on,
        "held_out": {
            "champion": {"version": champion.version, **cmp.champion.model_dump()},
            "challenger": cmp.challenger.model_dump(),
        },
        "reason": cmp.reason,
    }
    publish_model(settings, challenger, info, activate_as="retrain", by=who, registry=reg)
    click.echo(f"published {challenger.version} (parent {champion.version}); workers swap to it")


@click.command()
@click.argument("fingerprint")
@click.option("--incident/--not-incident", required=True, help="was the alert a real incident?")
@click.option(
    "--template",
    "templates",
    multiple=True,
    help="only this evidence template (its id, e.g. T3, or its text); repeatable",
)
@click.option("--by", default=None, help="who labels (default: the user name)")
@click.pass_obj
def label(
    settings: Settings, fingerprint: str, incident: bool, templates: tuple[str, ...], by: str | None
) -> None:
    """Label an alert's evidence templates; a person's label overrides the LLM's for them."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from sluice.stream.errors import RecordError
    from sluice.stream.kafka.clients import client_config
    from sluice.stream.kafka.topics import read_topic
    from sluice.stream.records import Alert, Feedback, read_record

    latest: Alert | None = None
    matched: set[str] = set()
    try:
        for r in read_topic(settings, settings.topics.alerts):
            try:
                a = read_record(Alert, r.value or b"")
            except RecordError:
                continue
            if a.fingerprint.startswith(fingerprint):
                matched.add(a.fingerprint)
                if latest is None or a.generated_at >= latest.generated_at:
                    latest = a  # the latest revision: its evidence is the incident's
    except SluiceError as exc:
        raise click.ClickException(str(exc)) from None
    if len(matched) > 1:
        raise click.ClickException(f"{fingerprint!r} matches {len(matched)} alerts: {matched}")
    if latest is None:
        raise click.ClickException(f"no alert with fingerprint {fingerprint!r}")
    evidence = latest.evidence
    chosen = dict(evidence)
    if templates:
        by_text = {v: k for k, v in evidence.items()}
        unknown = [t for t in templates if t not in evidence and t not in by_text]
        if unknown:
            ids = ", ".join(evidence) or "none"
            raise click.ClickException(f"not evidence of this alert: {unknown} (ids: {ids})")
        keep = {t if t in evidence else by_text[t] for t in templates}
        chosen = {k: v for k, v in evidence.items() if k in keep}
    now = datetime.now(UTC)
    records = [
        Feedback(
            template=t,
            text=t,
            label=incident,
            source="human",
            weight=1.0,
            model_version=latest.provenance.filter_version,
            score=None,
            scope=latest.report.scope,
            at=now,
            by=by or _who(),
        )
        for t in chosen.values()
    ]
    try:
        producer = KafkaProducer(**client_config(settings.kafka), acks="all")
        for f in records:
            producer.send(settings.topics.feedback, key=f.key().encode(), value=f.to_bytes())
        producer.flush(timeout=30)
        producer.close(timeout=10)
    except KafkaError as exc:
        raise click.ClickException(f"writing labels failed: {exc}") from None
    what = "incident" if incident else "not an incident"
    click.echo(f"labelled {len(records)} templates of alert {latest.fingerprint} as {what}")


def _registry(settings: Settings) -> Registry:
    from sluice.stream.learning.registry import read_registry

    try:
        return read_registry(settings)
    except SluiceError as exc:
        raise click.ClickException(str(exc)) from None


def _estimates(settings: Settings) -> dict[str, Any]:
    from sluice.stream.learning.recall import estimate_recall
    from sluice.stream.learning.retrain import read_outcomes

    try:
        return dict(estimate_recall(read_outcomes(settings)))
    except SluiceError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("list")
@click.pass_obj
def model_list(settings: Settings) -> None:
    """The published models, oldest first; `*` marks the active one."""
    reg = _registry(settings)
    est = _estimates(settings)
    active = reg.active.version if reg.active else None
    if not reg.entries:
        click.echo("no model published yet (workers use the configured model)")
    for v, e in sorted(reg.entries.items(), key=lambda kv: kv[1].offset):
        r = est.get(v)
        click.echo(
            f"{'*' if v == active else ' '} {v}  created {e.meta.created_at:%Y-%m-%d %H:%M}  "
            f"parent {e.meta.parent_version or '-':12s}  threshold {e.meta.threshold:.4f}  "
            f"trained on {e.meta.n_train}  recall {r.text() if r else 'n/a (no outcomes)'}"
        )
    for reason in reg.rejected:
        click.echo(f"rejected record: {reason}", err=True)


@click.command("show")
@click.argument("version")
@click.pass_obj
def model_show(settings: Settings, version: str) -> None:
    """A published model's metadata, registry notes and recall estimate, as JSON."""
    from sluice.stream.errors import RegistryError

    reg = _registry(settings)
    try:
        e = reg.entry(version)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    d = e.describe()
    d["active"] = reg.active is not None and reg.active.version == e.version
    r = _estimates(settings).get(e.version)
    d["recall_estimate"] = r.__dict__ if r else None
    click.echo(json.dumps(d, indent=2, default=str))


@click.command("promote")
@click.argument("version")
@click.option("--by", default=None)
@click.pass_obj
def model_promote(settings: Settings, version: str, by: str | None) -> None:
    """Make a published version the active one on every worker."""
    from sluice.stream.learning.registry import activate

    try:
        act = activate(settings, version, "promote", by or _who())
    except SluiceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"active: {act.version} (was {act.previous[-1] if act.previous else 'none'})")


@click.command("rollback")
@click.option("--by", default=None)
@click.pass_obj
def model_rollback(settings: Settings, by: str | None) -> None:
    """Make the version active before the current one active again, on every worker."""
    from sluice.stream.learning.registry import activate, rollback_target

    try:
        reg = _registry(settings)
        act = activate(settings, rollback_target(reg), "rollback", by or _who())
    except SluiceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"rolled back to {act.version}")
