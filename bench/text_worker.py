"""What reading text lines' headers costs one worker, through the local Kafka.

One `sluice worker` pinned to one core on the 1,000,000 HDFS text lines of `bench.throughput`,
`SLUICE_PIPELINE__TEXT__DETECT` false and true alternating on the same topic (each its own
consumer group), four rounds; rates from the filter stage's committed offsets.

    deploy/local/kafka start && python -m bench.text_worker    (also in `make bench`)
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.throughput import _env, _hdfs, _measure, _produce, _topics

RESULTS = Path(__file__).resolve().parent / "results" / "text-worker.json"


def main(rounds: int = 4) -> None:
    values = _hdfs(1_000_000)
    base = _env(uuid.uuid4().hex[:8], 1)
    _topics(base)
    _produce(base["SLUICE_TOPICS__EVENTS"], values)
    rates: dict[str, list[int]] = {"false": [], "true": []}
    print("one worker on 1,000,000 HDFS text lines, header reading (text.detect) off and on:")
    for r in range(rounds):
        for detect in ("false", "true"):
            group = f"{base['SLUICE_KAFKA__GROUP_ID']}-{detect}-{r}"
            env = {**base, "SLUICE_PIPELINE__TEXT__DETECT": detect, "SLUICE_KAFKA__GROUP_ID": group}
            _topics(env)
            rate = round(_measure(env, len(values), [0])["events_per_s"])
            rates[detect].append(rate)
            print(f"  round {r + 1}: detect {detect:5s} {rate:>9,d} events/s", flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "text_worker", "command": "python -m bench.text_worker",
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "events": len(values),
        "events_per_s": {"detect_off": rates["false"], "detect_on": rates["true"]},
    }, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
