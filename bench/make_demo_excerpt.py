"""Cut the bundled demo excerpt from ../shared/data (run once; the output is committed).

    .venv/bin/python -m bench.make_demo_excerpt

Nezha Train-Ticket, 2023-01-29: the `return` fault injected into ts-contacts-service at 08:52:06,
from 60 s before to 90 s after the injection, as JSON lines (one event per line).
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta
from pathlib import Path

from sluice.models.training.datasets import load_nezha_window, shared_data_dir

OUT = (
    Path(__file__).resolve().parents[1] / "stream" / "demo" / "trainticket-contacts-fault.jsonl.gz"
)
INJECT = datetime(2023, 1, 29, 8, 52, 6)


def main() -> None:
    base = shared_data_dir() / "nezha-trainticket" / "2023-01-29"
    lo, hi = INJECT - timedelta(seconds=60), INJECT + timedelta(seconds=90)
    rows = []
    for name in ("08_52", "08_53", "08_54"):
        for x in load_nezha_window(base / f"{name}_log.csv.gz"):
            ts = datetime.fromisoformat(x.timestamp[:26].rstrip("Z"))
            if lo <= ts <= hi:
                rows.append(
                    (
                        ts,
                        {
                            "ts": x.timestamp,
                            "service": x.pod,
                            "trace_id": x.trace_id,
                            "span_id": x.span_id,
                            "message": x.text,
                        },
                    )
                )
    rows.sort(key=lambda r: r[0])
    with gzip.open(OUT, "wt", encoding="utf-8") as fh:
        for _, row in rows:
            fh.write(json.dumps(row) + "\n")
    print(f"{len(rows)} events written to {OUT}")


if __name__ == "__main__":
    main()
