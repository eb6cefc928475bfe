"""Reading records that another release may have written: strict about the fields this one
knows, tolerant of the ones a newer release of the same major version added, refusing a newer
major version (the rules: docs/architecture.md, "Wire compatibility").

Writers' models forbid undeclared fields, so a strict read is the fast path: a record without
unknown fields costs one pydantic validation, as before. Only when that fails are the fields
pydantic calls extra dropped (by the locations in its errors) and the record read again,
strictly; what was dropped is counted per record kind (`WIRE`) and never reaches typed state.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast

from pydantic import BaseModel, TypeAdapter, ValidationError

from sluice.stream.errors import RecordError, RecordKindError, RecordVersionError

__all__ = ["WIRE", "WireCounters", "read_model", "read_tagged"]

log = logging.getLogger(__name__)
_M = TypeVar("_M", bound=BaseModel)
_U = TypeVar("_U")


class WireCounters:
    """Fields of records that this release does not know, per record kind: added by a newer
    release of the same major version, dropped when read (never kept in typed state) and
    counted here (the metric `sluice_wire_unknown_fields_total`). Each field is logged once."""

    def __init__(self) -> None:
        self.unknown_fields: Counter[str] = Counter()
        self.unknown_kinds: Counter[str] = Counter()  # by topic
        self._logged: set[tuple[str, str]] = set()

    def count(self, record: str, fields: Sequence[str]) -> None:
        self.unknown_fields[record] += len(fields)
        for f in sorted(set(fields)):
            self._once(
                record,
                f,
                "%s records carry a field this release does not know (%s): "
                "written by a newer release? ignored (sluice_wire_unknown_fields_total)",
            )

    def count_kind(self, topic: str, kind: str) -> None:
        self.unknown_kinds[topic] += 1
        self._once(
            topic,
            f"kind:{kind}",
            "%s records of a kind this release does not know (%s): "
            "written by a newer release? skipped (sluice_wire_unknown_kinds_total)",
        )

    def _once(self, record: str, what: str, message: str) -> None:
        if (record, what) not in self._logged and len(self._logged) < 1000:
            self._logged.add((record, what))
            log.warning(message, record, repr(what[:100]))  # a bounded repr: it is input


#: The process's counts (a record read anywhere in the process is counted once, here).
WIRE = WireCounters()


def read_model(
    model: type[_M], raw: bytes | str, *, name: str, version: int, errors_as: str | None = None
) -> _M:
    """A record of `model` from JSON: the fields it declares read strictly, the ones it does not
    dropped and counted under `name`; a `schema_version` above `version` raises
    RecordVersionError, anything else unreadable RecordError (named `errors_as`, else `name`)."""
    shown = errors_as or name
    try:
        rec = model.model_validate_json(raw)
    except ValidationError as exc:
        rec = _read_dropping_unknown(model, raw, name, shown, version, exc)
    _check_version(getattr(rec, "schema_version", None), shown, version)
    return rec


def read_tagged(
    adapter: TypeAdapter[_U],
    kinds: Mapping[str, type[BaseModel]],
    raw: bytes,
    topic: str,
    version: int,
) -> _U:
    """A record of a topic that carries several kinds, told apart by `kind` (`adapter` reads
    their union): as `read_model`, counted under its kind, errors named after the topic. A kind
    not in `kinds` raises RecordKindError, counted per topic: a newer release's, to be skipped."""
    try:
        rec = adapter.validate_json(raw)
    except ValidationError as exc:
        data = _loads(raw, topic)
        kind = data.get("kind") if isinstance(data, dict) else None
        model = kinds.get(kind) if isinstance(kind, str) else None
        if model is None:
            found = data.get("schema_version") if isinstance(data, dict) else None
            _check_version(found, topic, version)
            if isinstance(kind, str):
                WIRE.count_kind(topic, kind)
                raise RecordKindError(topic, kind) from None
            raise RecordError(topic, _first_error(exc)) from None
        return cast(_U, read_model(model, raw, name=str(kind), version=version, errors_as=topic))
    _check_version(getattr(rec, "schema_version", None), topic, version)
    return rec


def _read_dropping_unknown(
    model: type[_M], raw: bytes | str, name: str, errors_as: str, version: int, exc: ValidationError
) -> _M:
    """The slow path, taken only when the strict read failed: drop what the errors call an
    unknown field, then read again (strictly; a field of the wrong type is still an error)."""
    data = _loads(raw, errors_as)
    if isinstance(data, dict):
        _check_version(data.get("schema_version"), errors_as, version)
    dropped = [
        ".".join(str(step) for step in e["loc"] if isinstance(step, str))
        for e in exc.errors()
        if e["type"] == "extra_forbidden" and _drop(data, e["loc"])
    ]
    if not dropped:
        raise RecordError(errors_as, _first_error(exc)) from None
    try:
        rec = model.model_validate_json(json.dumps(data))
    except ValidationError as again:
        raise RecordError(errors_as, _first_error(again)) from None
    WIRE.count(name, dropped)
    return rec


def _drop(data: Any, loc: Sequence[int | str]) -> bool:
    """Delete the key at `loc` (a pydantic error location) from parsed JSON; steps that name no
    key or index (a union member's tag) are passed over. False if there is no such key."""
    node = data
    for step in loc[:-1]:
        in_object = isinstance(node, dict) and isinstance(step, str) and step in node
        in_list = isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)
        if in_object or in_list:
            node = node[step]
    if isinstance(node, dict) and loc and loc[-1] in node:
        del node[loc[-1]]
        return True
    return False


def _check_version(found: Any, name: str, version: int) -> None:
    if isinstance(found, int) and not isinstance(found, bool) and found > version:
        raise RecordVersionError(name, found, version)


def _loads(raw: bytes | str, name: str) -> Any:
    """The standard library's parser: the slow path only, and integers of any size (a field
    orjson refuses is still a field pydantic reads)."""
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise RecordError(name, f"invalid JSON ({exc})") from None


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(step) for step in e["loc"])
    return f"{e['msg']} ({where})" if where else str(e["msg"])
