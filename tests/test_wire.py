"""Wire compatibility: every record kind is read with a field a newer release of the same major
version added (dropped, counted), refused at a newer major version (a dead letter naming both),
and still refused where a field it knows is wrong. The rolling upgrade against the real broker is
tests/kafka/test_rolling_upgrade_kafka.py."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sluice.models.analyst import Analysis, TemplateVerdict
from sluice.stream import PipelineSettings
from sluice.stream.analysis import AnalysisState, MemoryStore
from sluice.stream.analysis.state import ScopeState, dump_state, load_scope
from sluice.stream.errors import RecordError, RecordKindError, RecordVersionError
from sluice.stream.records import (
    RECORDS,
    SCHEMA_VERSION,
    Ack,
    Acknowledgement,
    Analysed,
    DeadLetter,
    Feedback,
    Outcome,
    SignalCounts,
    Silence,
    SuspectBatch,
    Tick,
    dead_letter_kind,
    parse_control_record,
    parse_suspects_record,
    read_record,
    record_schema,
)
from sluice.stream.records import SignalVerdict as _SignalVerdict
from sluice.stream.wire import WIRE
from tests.support.pipeline import ev, suspect
from tests.support.sinks import alert, with_graph

AT = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)


def _analysis() -> Analysis:
    a = with_graph(alert())
    verdict = TemplateVerdict(template_id="T1", relevant=True)
    templates = {"T1": "connection refused"}
    return Analysis(
        report=a.report, verdicts=[verdict], provenance=a.provenance, templates=templates
    )


#: One record of every kind, with every nested object filled in (so that each object can be
#: given an unknown field).
SAMPLES: dict[str, BaseModel] = {
    "event": ev(1),
    "suspect": suspect(1),
    "suspects": SuspectBatch(scope="s", suspects=[suspect(1), suspect(2, audit=True)]),
    "tick": Tick(),
    "analysed": Analysed(
        scope="s", seq=3, attempt=0, analysis=_analysis().model_dump_json(), done_at=AT
    ),
    "counts": SignalCounts(
        scope="s",
        bucket_s=10,
        names=["a", "b"],
        templates=["x"],
        services=[(0, 0, 3)],
        gaps=[(0, 0, 1, 0.5)],
        lines=[(0, 0, 0, 3, 1)],
        steps=[(0, 0, 0, 1, 0, 2)],
    ),
    "alert": with_graph(alert()).model_copy(
        update={"acknowledged": Acknowledgement(by="ana", at=AT, note="on it")}
    ),
    "feedback": Feedback(
        template="x",
        text="ERROR x 1",
        label=True,
        source="llm",
        weight=1.0,
        model_version="m",
        score=0.9,
        scope="s",
        at=AT,
    ),
    "outcome": Outcome(
        scope="s",
        window_end=AT,
        model_version="m",
        audit_rate=0.01,
        analysis="heuristic",
        flagged_positive=3,
        at=AT,
        signals=[
            _SignalVerdict(kind="gap", service="a", strength=2.0, named=True, root_cause=False)
        ],
    ),
    "deadletter": DeadLetter.of(b"{", "events", 0, 7, "invalid JSON"),
    "ack": Ack(fingerprint="f00d", by="ana", note="on it", at=AT),
    "silence": Silence(target="shop", until=AT, by="ana", at=AT),
    "analysis": _analysis(),
}
MODELS: dict[str, type[BaseModel]] = {**RECORDS, "analysis": Analysis}


def _reader(name: str) -> Any:
    """How a worker reads that kind: the topic readers for suspects and controls records."""
    if name in {"suspects", "tick", "analysed", "counts"}:
        return parse_suspects_record
    if name in {"ack", "silence"}:
        return parse_control_record
    return lambda raw: read_record(MODELS[name], raw)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model inside an annotation (X, X | None, list[X]), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if (m := _model_of(arg)) is not None:
                return m
    return None


def _objects(model: type[BaseModel], data: Any, path: tuple[Any, ...] = ()) -> Iterator[Any]:
    """(path, model) of every JSON object in `data` that is a record's object (not a map of
    names to values such as `attributes`, where a new key is data, not a field)."""
    yield path, model
    for name, info in model.model_fields.items():
        inner = _model_of(info.annotation)
        value = data.get(name)
        if inner is None or value is None:
            continue
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for i, v in items:
            yield from _objects(inner, v, (*path, name) if i is None else (*path, name, i))


def _at(data: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        data = data[step]
    return data


def test_samples_cover_every_record_kind() -> None:
    assert set(SAMPLES) == set(RECORDS) | {"analysis"}
    for name, rec in SAMPLES.items():
        assert _reader(name)(rec.model_dump_json().encode()) == rec


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_a_field_added_by_a_newer_release_is_read_dropped_and_counted(name: str) -> None:
    rec = SAMPLES[name]
    data = orjson.loads(rec.model_dump_json())
    places = list(_objects(MODELS[name], data))
    for path, _model in places:  # one new field in every object of the record at once
        _at(data, path)["added_by_next_release"] = {"any": ["json", 1, None]}
    before = WIRE.unknown_fields[name]
    read = _reader(name)(orjson.dumps(data))
    assert read == rec
    assert "added_by_next_release" not in read.model_dump_json()  # not kept in typed state
    assert WIRE.unknown_fields[name] - before == len(places)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(SAMPLES)),
    pick=st.integers(min_value=0),
    field=st.text(min_size=1, max_size=20),
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ),
)
def test_any_unknown_field_anywhere_reads_as_the_record_without_it(
    name: str, pick: int, field: str, value: Any
) -> None:
    rec = SAMPLES[name]
    data = orjson.loads(rec.model_dump_json())
    places = list(_objects(MODELS[name], data))
    path, model = places[pick % len(places)]
    if field in model.model_fields:
        return  # a known field: not an addition
    _at(data, path)[field] = value
    assert _reader(name)(json.dumps(data)) == rec  # integers of any size too


@pytest.mark.parametrize("name", sorted(set(SAMPLES) - {"analysis"}))
def test_a_newer_major_version_is_refused_naming_both_versions(name: str) -> None:
    data = orjson.loads(SAMPLES[name].model_dump_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(RecordVersionError) as err:  # the fields would read; their meaning may not
        _reader(name)(orjson.dumps(data))
    assert err.value.found == SCHEMA_VERSION + 1 and err.value.known == SCHEMA_VERSION
    assert f"schema version {SCHEMA_VERSION + 1} of " in str(err.value)
    assert f"this release reads ({SCHEMA_VERSION})" in str(err.value)
    assert dead_letter_kind(str(err.value)) == "newer_schema"
    data["new_in_v2"] = 1
    data.pop(next(iter(MODELS[name].model_fields.keys() - {"schema_version", "kind"}), ""), None)
    with pytest.raises(RecordVersionError):  # a changed layout says the version, not a field
        _reader(name)(orjson.dumps(data))


def test_a_known_field_of_the_wrong_type_is_still_refused() -> None:
    data = orjson.loads(SAMPLES["suspects"].model_dump_json())
    data["added"] = 1
    data["suspects"][0]["score"] = "high"
    with pytest.raises(RecordError) as err:
        parse_suspects_record(orjson.dumps(data))
    assert str(err.value).startswith("not a suspects record: ")
    assert "suspects.0.score" in str(err.value)
    assert dead_letter_kind(str(err.value)) == "not_suspects"
    data = orjson.loads(SAMPLES["alert"].model_dump_json())
    del data["report"]["title"]
    data["report"]["title_v2"] = "renamed"  # a rename is a major change: refused at version 1
    with pytest.raises(RecordError, match="Field required"):
        read_record(RECORDS["alert"], orjson.dumps(data))


def test_a_kind_only_a_newer_release_knows_is_skipped_and_counted() -> None:
    spans = b'{"schema_version": 1, "kind": "spans", "scope": "s", "spans": [1, 2]}'
    before = WIRE.unknown_kinds["suspects"]
    with pytest.raises(RecordKindError) as err:
        parse_suspects_record(spans)
    assert err.value.kind == "spans" and WIRE.unknown_kinds["suspects"] == before + 1
    with pytest.raises(RecordKindError):
        parse_control_record(b'{"schema_version": 1, "kind": "mute", "target": "s"}')
    # The analysis stage skips it: no dead letter, no state, the offset applied.
    state = AnalysisState(PipelineSettings(), MemoryStore(), lambda: 0.0)
    out = state.apply(0, 7, spans)
    assert out.dead == [] and out.record is None and state.applied(0, 7)
    batch = SAMPLES["suspects"].model_dump_json().encode()
    assert isinstance(state.apply(0, 8, batch).record, SuspectBatch)  # and goes on
    # A new kind of a newer major says the version; a record with no kind is no record.
    with pytest.raises(RecordVersionError):
        parse_suspects_record(b'{"schema_version": 2, "kind": "spans", "scope": "s"}')
    for raw in (b'{"schema_version": 1, "scope": "s"}', b'{"kind": 3}', b'{"kind": "suspects", '):
        with pytest.raises(RecordError) as refused:
            parse_suspects_record(raw)
        assert not isinstance(refused.value, RecordKindError)
        assert dead_letter_kind(str(refused.value)) == "not_suspects", refused.value


def test_writers_stay_strict() -> None:
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        Ack(fingerprint="f", by="ana", at=AT, added=1)  # type: ignore[call-arg]


def test_stored_state_written_with_an_added_field_is_read() -> None:
    """A newer release's standby writes the changelog with its fields: an older one reads it."""
    st = ScopeState(firing={"f": SAMPLES["alert"]})  # type: ignore[dict-item]
    data = orjson.loads(dump_state(st))
    data["added"] = True
    data["firing"]["f"]["report"]["added"] = [1]
    before = WIRE.unknown_fields["analysis-state"]
    assert load_scope("scope/s", orjson.dumps(data)) == st
    assert WIRE.unknown_fields["analysis-state"] - before == 2


def test_schema_states_the_version_and_what_may_be_added() -> None:
    for name in RECORDS:
        schema = record_schema(name)  # type: ignore[arg-type]
        assert schema["x-sluice-schema-version"] == SCHEMA_VERSION
        assert "optional fields" in schema["$comment"]
        assert f"makes version {SCHEMA_VERSION + 1}" in schema["$comment"]
        assert b'"additionalProperties":false' not in orjson.dumps(schema)
