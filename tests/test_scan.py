"""`sluice scan` end to end: the bundled demo, and what a newcomer gives it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner, Result

from sluice.models.filter import normalize_batch
from sluice.stream import PipelineSettings
from sluice.stream.cli.main import cli
from sluice.stream.ingest.parsing import parse_batch
from sluice.stream.ingest.sources import read_records
from sluice.stream.records import (
    Alert,
)
from tests.support.pipeline import DEMO, scan_demo


def test_scan_of_the_demo_names_the_faulty_service() -> None:
    cfg = PipelineSettings(alert_time="event")
    result = scan_demo(cfg)
    assert result.events == 6306 and not result.deadletters
    c = result.counters
    assert 0 < c.flagged < result.events * 0.05  # the model forwards few ...
    # ... and first sight adds O(k ln n) sightings per template the model did not flag (k = 3)
    messages = parse_batch([r[0] for r in read_records(str(DEMO))], cfg.max_event_bytes).messages
    templates = len(set(normalize_batch(messages)))
    assert 0 < c.first_sight <= templates * 3 * (np.log(600) + 1)
    assert result.suspects == c.flagged + c.audited
    high = [a for a in result.alerts if a.report.severity in ("critical", "high")]
    assert high and all(a.report.root_causes[0].service == "ts-contacts-service" for a in high)
    assert all(isinstance(a, Alert) for a in result.alerts)


def _scan(*args: str) -> Result:
    return CliRunner().invoke(cli, ["scan", *args])


def test_what_scan_cannot_read_is_one_clear_line(tmp_path: Path) -> None:
    binary = tmp_path / "a.out"
    binary.write_bytes(bytes(range(256)) * 40)
    for arg, said in [
        (str(tmp_path), "is a directory"),
        (str(binary), "is a binary file, not a log: refused"),
        (str(tmp_path / "missing.log"), "no such file"),
    ]:
        run = _scan(arg)
        assert run.exit_code == 1 and said in run.output and "Traceback" not in run.output
        assert len(run.output.strip().splitlines()) == 1
    truncated = tmp_path / "truncated.log"  # a stray run of NULs, as a crash leaves: still a log
    truncated.write_bytes(b"ERROR disk full\n" * 50 + b"\x00" * 100 + b"\nINFO back\n")
    assert _scan(str(truncated)).exit_code == 0


def test_blank_lines_are_skipped_and_the_answer_is_on_stdout(tmp_path: Path) -> None:
    log = tmp_path / "quiet.log"
    log.write_text("INFO started\n\n   \nINFO ready\n")
    run = CliRunner().invoke(cli, ["scan", str(log)])
    assert run.exit_code == 0 and "dead letter" not in run.stderr
    assert run.stdout.startswith("No alerts: nothing in 2 events")
    assert "2 blank lines skipped" in run.stderr and "0 unparseable" in run.stderr
    assert "sluice_events_consumed_total" not in run.stderr  # metrics only with --metrics
    assert (
        "sluice_events_consumed_total 2"
        in CliRunner().invoke(cli, ["scan", str(log), "--metrics"]).stderr
    )


def test_the_summary_counts_alerts_not_revisions_and_every_dead_letter(tmp_path: Path) -> None:
    run = CliRunner().invoke(cli, ["scan", "--demo", "--json"])
    fingerprints = {json.loads(x)["fingerprint"] for x in run.stdout.splitlines()}
    revisions = len(run.stdout.splitlines())
    assert len(fingerprints) == 1 and revisions == 3
    assert "1 alert (3 revisions)" in run.stderr
    broken = tmp_path / "broken.log"
    broken.write_text("".join(f'{{"msg": "cut {i}\n' for i in range(8)))
    run = CliRunner().invoke(cli, ["scan", str(broken)])
    assert run.stderr.count("dead letter broken.log") == 5
    assert "... and 3 more dead letters (all of them with --deadletter FILE)" in run.stderr
