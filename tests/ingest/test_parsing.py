"""Parsing: any record becomes an event or a dead letter with its reason; wire records carry
versions."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.models.filter import KeywordFilter
from sluice.stream import PipelineSettings
from sluice.stream.errors import ParseError
from sluice.stream.filtering.screen import screen_batch
from sluice.stream.ingest.parsing import parse_event
from sluice.stream.records import (
    DeadLetter,
    Event,
    record_schema,
)
from tests.support.pipeline import screen

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
_FIELDS = ["ts", "time", "@timestamp", "service", "level", "message", "log", "trace_id", "host"]


@given(st.binary(max_size=300))
def test_parse_never_raises_anything_but_parse_error(raw: bytes) -> None:
    try:
        e = parse_event(raw, None, "svc", 200)
    except ParseError as exc:
        assert str(exc)
    else:
        assert Event.model_validate_json(e.to_bytes()) == e  # and it round-trips


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"x" * 300, "exceeds the maximum"),
        (b'{"message": "trunc', "invalid JSON"),
        (b"[1, 2, 3]", None),  # JSON, but not an object: text
        (b"[Sun Dec 04 04:47:44 2005] [error] mod_jk child init 1 -2", None),
        (b"", "empty event"),
        (b"   \n", "empty event"),
        (b'{"level": "error"}', "without a message"),
        (b'"just a string"', None),  # a plain line that happens to start with a quote
    ],
)
def test_bad_records_get_a_reason(raw: bytes, reason: str | None) -> None:
    if reason is None:
        assert parse_event(raw, None, "svc", 200).message == raw.decode()
        return
    with pytest.raises(ParseError, match=reason):
        parse_event(raw, None, "svc", 200)


def test_json_and_text_fields() -> None:
    e = parse_event(
        b'{"@timestamp": 1674982284968, "app": "pay", "severity": "warning", '
        b'"msg": "slow", "region": "eu", "n": 3}',
        None,
        "d",
        10_000,
    )
    assert (e.service, e.level, e.message) == ("pay", "WARN", "slow")
    assert e.ts == datetime(2023, 1, 29, 8, 51, 24, 968000, tzinfo=UTC)
    assert e.attributes == {"region": "eu", "n": "3"}
    t = parse_event(b"2024-05-01 10:00:00,123 ERROR [main] db down", b"orders", "d", 10_000)
    assert (t.service, t.level) == ("orders", "ERROR")
    assert t.ts == datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)
    k8s = parse_event(
        json.dumps(
            {
                "service": "ts-order-service-5b67c48447-mv5hb",
                "log": '{"log": "hi\\n", "stream": "stdout"}',
            }
        ).encode(),
        None,
        "d",
        10_000,
    )
    assert (k8s.service, k8s.message) == ("ts-order-service", "hi")


def test_deadletter_keeps_the_raw_bytes() -> None:
    d = DeadLetter.of(b"\xff\x00raw", "events", 3, 42, "invalid UTF-8 at byte 0")
    back = DeadLetter.model_validate_json(d.to_bytes())
    assert base64.b64decode(back.value_b64) == b"\xff\x00raw"
    assert (back.partition, back.offset) == (3, 42)


def test_schemas_are_versioned() -> None:
    for name in ("alert", "feedback", "event", "suspect", "deadletter"):
        assert "schema_version" in record_schema(name)["properties"]  # type: ignore[arg-type]


@settings(deadline=2000, max_examples=300)
@given(st.dictionaries(st.sampled_from(_FIELDS), _json_values, max_size=6))
def test_any_json_object_becomes_an_event_or_a_dead_letter(obj: dict[str, object]) -> None:
    """Every field with every type, numbers Python's json accepts included (NaN, 1e400, 10**30)."""
    raw = json.dumps(obj).encode()
    out = screen_batch(
        [raw], [None], lambda i: ("t", 0, i), KeywordFilter([""]), PipelineSettings()
    )  # the empty keyword flags everything: the whole record is built and serialized
    if out.dead:
        assert out.dead[0].reason and out.dead[0].offset == 0
    else:
        (s,) = screen([raw], PipelineSettings(), [""])
        assert isinstance(s.event.message, str)
