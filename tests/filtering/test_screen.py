"""The filter stage's logic on one batch: flags, samples and splits deterministically."""

from __future__ import annotations

import base64

from sluice.models.filter import KeywordFilter
from sluice.stream import PipelineSettings
from sluice.stream.filtering.screen import screen_batch
from sluice.stream.records import (
    DEAD_LETTER_KEEP_BYTES,
    parse_suspects_record,
)
from tests.support.pipeline import screen


def test_screen_flags_and_samples_deterministically() -> None:
    cfg = PipelineSettings(audit_rate=0.2)
    values = [f"INFO fine {i}".encode() for i in range(2000)] + [
        f"ERROR boom {i}".encode() for i in range(10)
    ]
    s1 = screen(values, cfg, ["boom"])
    s2 = screen(values, cfg, ["boom"])
    assert [x.event for x in s1] == [x.event for x in s2]  # content-hashed, repeatable
    flagged = [x for x in s1 if not x.audit]
    audits = [x for x in s1 if x.audit]
    assert len(flagged) == 10 and all(x.sampling_probability == 1.0 for x in flagged)
    assert 300 < len(audits) < 500 and all(x.sampling_probability == 0.2 for x in audits)
    assert {x.event.source for x in flagged} == {f"t:{i}" for i in range(2000, 2010)}


def test_screen_splits_large_batches_under_the_record_limit() -> None:
    from sluice.stream.filtering.screen import MAX_SUSPECTS_MESSAGE_BYTES

    values = [(f"ERROR {i} " + "x" * 4000).encode() for i in range(600)]  # ~2.4 MB flagged
    out = screen_batch(
        values,
        [None] * 600,
        lambda i: ("f", None, None),
        KeywordFilter(["error"]),
        PipelineSettings(),
    )
    messages = out.messages["default"]
    assert len(messages) >= 3 and all(len(m) <= MAX_SUSPECTS_MESSAGE_BYTES for m in messages)
    got = [s.event.message for m in messages for s in parse_suspects_record(m).suspects]  # type: ignore[union-attr]
    assert got == [v.decode() for v in values]


def test_records_too_large_for_kafka_become_dead_letters_that_fit() -> None:
    """A 1 MB line, and an event too large to forward, end as dead letters under Kafka's limit
    (a record the producer cannot deliver would be retried forever)."""
    huge = b"ERROR " + b"x" * 1_000_000
    out = screen_batch([huge], [None], lambda i: ("t", 0, 7), KeywordFilter(), PipelineSettings())
    (d,) = out.dead
    assert "exceeds the maximum" in d.reason and (d.size, d.truncated, d.offset) == (
        len(huge),
        True,
        7,
    )
    assert len(d.to_bytes()) < 1_000_000
    assert base64.b64decode(d.value_b64) == huge[:DEAD_LETTER_KEEP_BYTES]
    big = PipelineSettings(max_event_bytes=2_000_000)
    out = screen_batch([huge], [None], lambda i: ("t", 0, 7), KeywordFilter(), big)
    assert not out.messages and "exceeds a suspects record" in out.dead[0].reason
