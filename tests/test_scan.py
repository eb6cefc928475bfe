"""`sluice scan` end to end on the bundled demo."""

from __future__ import annotations

import numpy as np

from sluice.models.filter import normalize_batch
from sluice.stream import PipelineSettings
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
