"""A newcomer's own server log (`tests/fixtures/server-mixed.log`): syslog, nginx access and
error lines, an application's Python traceback, a Spring Boot Java stack and PostgreSQL, in one
file. Each line is read in its own format, and each stack trace is one event."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from sluice.models.analyst import HeuristicAnalyst
from sluice.models.filter import KeywordFilter, normalize
from sluice.stream import PipelineSettings
from sluice.stream.filtering.screen import screen_batch
from sluice.stream.ingest.sources import ReadStats, read_records
from sluice.stream.ingest.textformats import TextFormats
from sluice.stream.records import Event, parse_suspects_record
from sluice.stream.scan import scan

MIXED = Path(__file__).resolve().parents[1] / "fixtures" / "server-mixed.log"
CFG = PipelineSettings(audit_rate=0.0)


def _events(cfg: PipelineSettings = CFG) -> list[Event]:
    """Every event of the file, as the filter stage forwards them (a filter that flags all)."""
    records = list(read_records(str(MIXED)))
    text = cfg.text.formats(MIXED.stat().st_mtime)
    text.fallback_service = "server-mixed"
    out = screen_batch([r[0] for r in records], [None] * len(records),
                       lambda i: (records[i][2], None, None), KeywordFilter([""]), cfg,
                       text=text)  # fmt: skip
    assert not out.dead
    return [s.event for ms in out.messages.values() for m in ms
            for s in parse_suspects_record(m).suspects]  # type: ignore[union-attr]  # fmt: skip


def test_each_line_is_read_in_its_own_format() -> None:
    events = _events()
    by = {e.service for e in events}
    assert {"sshd", "systemd", "kernel", "nginx", "postgres"} <= by
    templates = [normalize(e.message) for e in events]
    assert not [t for t in templates if t.startswith("dec <num>")]  # no syslog header left
    assert all(e.ts is not None and e.ts.year == 2026 for e in events)
    oom = next(e for e in events if "Out of memory" in e.message)
    assert oom.service == "kernel" and oom.host == "web-1"
    assert next(e for e in events if "slots are reserved" in e.message).level == "FATAL"


def test_each_stack_trace_is_one_event() -> None:
    events = _events()
    python = [e for e in events if "Traceback" in e.message]
    assert len(python) == 1 and python[0].message.startswith("ERROR api: checkout failed")
    assert python[0].message.endswith("orders.payments.PaymentGatewayError: 504")
    java = [e for e in events if "NullPointerException" in e.message]
    assert len(java) == 1 and "\tat com.example.shop" in java[0].message
    assert "Caused by: java.net.SocketTimeoutException" in java[0].message
    assert java[0].level == "ERROR" and java[0].service == "PaymentController"
    assert not [e for e in events if e.message.lstrip().startswith(("at ", "File ", "..."))]
    assert len(events) == 26  # 41 lines: 2 blank, 13 joined into the two traces


def test_without_joining_the_frames_are_events_of_their_own() -> None:
    cfg = PipelineSettings(audit_rate=0.0, text={"multiline": False})
    assert len(_events(cfg)) == 39


def test_an_access_logs_status_and_route_survive_in_its_template() -> None:
    t = {normalize(e.message) for e in _events() if e.attributes.get("format") == "access"}
    assert "error post api/checkout <num> bad gateway" in t
    assert "error get api/orders/<num> <num> service unavailable" in t


def test_scan_reads_the_file_without_dead_letters_and_names_real_services() -> None:
    stats = ReadStats()
    text = TextFormats(reference=MIXED.stat().st_mtime)
    text.fallback_service = "server-mixed"
    records = read_records(str(MIXED), stats=stats)
    flags = KeywordFilter(["error", "fatal"])
    result = asyncio.run(scan(records, CFG, flags, HeuristicAnalyst(), lambda: datetime.now(UTC),
                              text=text))  # fmt: skip
    assert stats.blank == 2 and not result.deadletters
    assert result.counters.joined == 13 and result.events == 26
    assert result.alerts
    named = set().union(*(a.services() for a in result.alerts))
    assert {"nginx", "postgres"} <= named
    evidence = " ".join(t for a in result.alerts for t in a.evidence.values())
    assert "<email>" not in evidence and "postgresql@" in evidence  # a unit, not an address


_LANDED_READS_ALERTS = """
import sys
from sluice.stream.analysis.state import load_scope
from sluice.stream.records import Alert, read_record
from sluice.stream.wire import WIRE

alert, state = sys.stdin.buffer.read().split(b"\\n")
a = read_record(Alert, alert)
firing = load_scope("scope/default", state).firing
assert firing and all(isinstance(x, Alert) for x in firing.values()), firing
print(len(a.evidence), len(a.anomalous), WIRE.unknown_fields["alert"])
"""


def test_the_release_before_reads_alerts_with_their_anomalous_templates(
    landed_release: str,
) -> None:
    """Rolling upgrades: the landed release reads this release's alerts (on `alerts`, and as
    the firing alerts inside a scope's stored state), `anomalous` included: the field landed
    with it (the release before that dropped it and counted it as unknown)."""
    import subprocess
    import sys

    from sluice.stream.analysis.state import ScopeState, dump_state

    text = TextFormats(reference=MIXED.stat().st_mtime)
    flags = KeywordFilter(["error", "fatal"])
    result = asyncio.run(scan(read_records(str(MIXED)), CFG, flags, HeuristicAnalyst(),
                              lambda: datetime.now(UTC), text=text))  # fmt: skip
    alert = result.alerts[-1]
    assert alert.anomalous and set(alert.anomalous) < set(alert.evidence)  # context beside it
    raw_state = dump_state(ScopeState(firing={alert.fingerprint: alert}))  # as a worker stores it
    assert b'"anomalous"' in raw_state
    run = subprocess.run(
        [sys.executable, "-c", _LANDED_READS_ALERTS],
        input=alert.to_bytes() + b"\n" + raw_state,
        env={"PYTHONPATH": landed_release},
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    templates, anomalous, unknown = map(int, run.stdout.split())
    assert (templates, anomalous, unknown) == (len(alert.evidence), len(alert.anomalous), 0)
