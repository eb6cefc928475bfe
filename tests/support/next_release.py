"""`python -m tests.support.next_release ARGS`: `sluice ARGS` as a next release would run it, one
that adds an optional field to what it writes on the suspects topic (the batch, each suspect and
its event) and to alerts (the alert and its report), as the wire rules allow within one major
version (docs/architecture.md, "Wire compatibility"). Its readers are this release's.

Built by configuration, not by a copy of the code: the writers' bytes are extended where they are
made (`screen._encode` for suspects, `Alert.to_bytes` for alerts), so everything else, reading
included, is exactly this release.
"""

from __future__ import annotations

import orjson

#: The field the next release adds, and its value in every record it writes.
FIELD = "next_release_note"
VALUE = "added in the next release"


def _suspects_next(raw: bytes) -> bytes:
    data = orjson.loads(raw)
    data[FIELD] = VALUE
    for s in data["suspects"]:
        s[FIELD] = s["event"][FIELD] = VALUE
    return orjson.dumps(data)


def _alert_next(raw: bytes) -> bytes:
    data = orjson.loads(raw)
    data[FIELD] = data["report"][FIELD] = VALUE
    return orjson.dumps(data)


def install() -> None:
    """Make this process's writers the next release's."""
    from sluice.stream.filtering import screen
    from sluice.stream.records import Alert

    encode, to_bytes = screen._encode, Alert.to_bytes
    screen._encode = lambda scope, parts: [_suspects_next(m) for m in encode(scope, parts)]
    Alert.to_bytes = lambda self: _alert_next(to_bytes(self))  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    from sluice.stream.cli.main import main

    main()
