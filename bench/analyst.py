"""Analyst benchmark on Nezha Train-Ticket faults: evidence, heuristic top-3, compression ratio.

    .venv/bin/python -m bench.analyst     (part of `make bench`)

For each injected fault, the window files from the injection minute to two minutes later are one
bundle: every line is scored by the shipped default filter; flagged lines plus a 0.5% audit
sample of the rest (seed 0) go into the bundle, as the pipeline would send them. Reported per
fault type: how often the bundle holds evidence (any event) from the injected service, how often
the heuristic analyst names it among its top-3 affected services, and the token ratio between
raw lines and the compressed prompt (counted with cl100k_base).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

from sluice.models.analyst import Bundle, BundleEvent, HeuristicAnalyst, compress, token_counter
from sluice.models.filter import default_model
from sluice.models.filter.datasets import NezhaLine, load_nezha_window, shared_data_dir

AUDIT_RATE = 0.005
BUDGET = 6000


def _ts(raw: str) -> datetime:
    return datetime.fromisoformat(raw[:26].rstrip("Z") + "+00:00")


def _event(x: NezhaLine, audit: bool = False) -> BundleEvent:
    return BundleEvent(
        x.service, x.text, x.level, _ts(x.timestamp), x.trace_id, x.span_id, audit=audit
    )


def fault_bundles(data: Path) -> list[tuple[dict[str, str], list[NezhaLine]]]:
    base = data / "nezha-trainticket" / "2023-01-29"
    faults = [
        f for hour in json.loads((base / "fault_list.json").read_text()).values() for f in hour
    ]
    out = []
    for f in faults:
        t = datetime.strptime(f["inject_time"], "%Y-%m-%d %H:%M:%S")
        files = [base / f"{(t + timedelta(minutes=m)):%H_%M}_log.csv.gz" for m in range(3)]
        lines = [x for p in files if p.exists() for x in load_nezha_window(p)]
        if lines:
            out.append((f, lines))
    return out


def main() -> None:
    data = shared_data_dir()
    model = default_model()
    heuristic = HeuristicAnalyst(BUDGET)
    count = token_counter()
    rng = random.Random(0)
    stats: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    raw_tokens = bundle_tokens = prompt_tokens = 0
    print(
        f"{'fault':21s} {'type':15s} {'injected service':26s} {'lines':>6s} {'fwd':>5s} "
        f"{'evid':>4s} {'top3':>4s} {'prompt tok':>10s}"
    )
    for fault, lines in fault_bundles(data):
        svc = fault["inject_pod"].rsplit("-", 2)[0]
        flagged = model.score([x.text for x in lines]) >= model.threshold
        chosen = [
            _event(x, audit=not f)
            for x, f in zip(lines, flagged, strict=True)
            if f or rng.random() < AUDIT_RATE
        ]
        bundle = Bundle("trainticket", chosen, filter_version=model.version)
        digest = compress(bundle, BUDGET)
        analysis = heuristic.from_digest(bundle, digest, "heuristic")
        top3 = [a.service for a in analysis.report.affected_services[:3]]
        evidence = any(e.service == svc for e in chosen)
        s = stats[fault["inject_type"]]
        s["n"] += 1
        s["evidence"] += evidence
        s["top3"] += svc in top3
        s["top1"] += bool(top3) and top3[0] == svc
        rt = sum(count.count(x.text) for x in lines)
        bt = sum(count.count(e.text) for e in chosen)
        raw_tokens, bundle_tokens, prompt_tokens = (
            raw_tokens + rt,
            bundle_tokens + bt,
            prompt_tokens + digest.prompt_tokens,
        )
        print(
            f"{fault['inject_time']:21s} {fault['inject_type']:15s} {svc:26s} {len(lines):6d} "
            f"{len(chosen):5d} {'yes' if evidence else 'no':>4s} "
            f"{'yes' if svc in top3 else 'no':>4s} {digest.prompt_tokens:10d}"
        )
    print(f"\n{'fault type':15s} {'faults':>6s} {'evidence':>9s} {'top-3':>6s} {'top-1':>6s}")
    total = defaultdict(float)
    for kind, s in sorted(stats.items()):
        for k, v in s.items():
            total[k] += v
        print(
            f"{kind:15s} {int(s['n']):6d} {s['evidence'] / s['n']:9.2f} "
            f"{s['top3'] / s['n']:6.2f} {s['top1'] / s['n']:6.2f}"
        )
    print(
        f"{'all':15s} {int(total['n']):6d} {total['evidence'] / total['n']:9.2f} "
        f"{total['top3'] / total['n']:6.2f} {total['top1'] / total['n']:6.2f}"
    )
    print(
        f"\ntokens: raw window lines {raw_tokens:,}; forwarded lines {bundle_tokens:,}; "
        f"prompts {prompt_tokens:,}"
    )
    print(
        f"compression: raw/prompt {raw_tokens / prompt_tokens:.1f}x, "
        f"forwarded/prompt {bundle_tokens / prompt_tokens:.1f}x"
    )

    normal = load_nezha_window(
        data / "nezha-trainticket" / "normal-2023-01-29" / "08_50_log.csv.gz"
    )
    nf = model.score([x.text for x in normal]) >= model.threshold
    nb = Bundle("trainticket", [_event(x) for x, f in zip(normal, nf, strict=True) if f])
    na = asyncio.run(heuristic.analyze(nb))
    print(
        f"normal window: {len(normal)} lines, {int(nf.sum())} forwarded, heuristic severity "
        f"{na.report.severity}, incident={na.report.is_incident}"
    )


if __name__ == "__main__":
    main()
