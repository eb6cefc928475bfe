"""First sight and per-template verdicts in the filter stage (pure logic, no broker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.models.filter import KeywordFilter
from sluice.stream import PipelineSettings
from sluice.stream.filtering.screen import screen_batch
from sluice.stream.filtering.verdicts import FirstSight, VerdictCache, decide
from sluice.stream.records import Feedback
from sluice.stream.settings import FirstSightSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fb(template: str, label: bool, source: str, minute: int = 0) -> Feedback:
    return Feedback(
        template=template,
        label=label,
        source=source,  # type: ignore[arg-type]
        weight=1.0,
        model_version="m",
        score=None,
        at=T0 + timedelta(minutes=minute),
    )


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_person_over_the_llm_latest_within_a_source_heuristic_ignored() -> None:
    cache = VerdictCache()
    assert cache.apply(fb("t", True, "llm", 1))
    assert not cache.apply(fb("t", False, "heuristic", 5))
    assert cache.apply(fb("t", False, "human", 2))
    assert not cache.apply(fb("t", True, "llm", 9))  # later, but a machine under a person
    assert cache.apply(fb("t", True, "human", 3))
    v = cache.get("t")
    assert v is not None and (v.relevant, v.source) == (True, "human")
    assert cache.ignored == 2


def test_the_cache_is_bounded_and_evicts_the_least_recently_given() -> None:
    cache = VerdictCache(cap=10)
    for i in range(25):
        cache.apply(fb(f"t{i}", True, "llm"))
    assert len(cache) == 10 and cache.evicted == 15
    assert cache.get("t24") is not None and cache.get("t0") is None


def test_first_sightings_are_forwarded_then_decay_to_the_audit_rate() -> None:
    first = FirstSight(FirstSightSettings(forwards=3, budget_per_min=1e9))
    rate = 0.01
    n = 2000
    templates = ["new thing"] * n
    flagged = np.zeros(n, dtype=bool)
    draws = np.random.default_rng(0).random(n)
    d = decide(templates, flagged, draws, rate, VerdictCache(), first)
    expected = np.maximum(rate, np.minimum(1.0, 3 / np.arange(1, n + 1)))
    assert np.allclose(d.probability, expected)
    assert d.forward[:3].all()  # the first three for sure
    assert (d.forward == (draws < expected)).all()
    # the next batch goes on counting: the 2001st sighting is at the audit rate
    d2 = decide(["new thing"], np.zeros(1, dtype=bool), np.array([0.5]), rate, None, first)
    assert d2.probability[0] == rate and not d2.forward[0]


def test_a_verdict_decides_its_template_whatever_the_score() -> None:
    cache = VerdictCache()
    cache.apply(fb("relevant one", True, "llm"))
    cache.apply(fb("noise", False, "llm"))
    templates = ["relevant one", "noise", "other"]
    flagged = np.array([False, True, True])
    draws = np.array([0.9, 0.9, 0.9])
    d = decide(templates, flagged, draws, 0.01, cache, None)
    assert d.forward.tolist() == [True, False, True]
    assert d.reason == {0: "verdict"} and d.verdict == {0: "llm", 1: "llm"}
    assert (d.by_verdict, d.held_back) == (1, 1)
    assert not d.audit.any()


def test_the_budget_bounds_first_sight_and_says_so() -> None:
    clock = Clock()
    first = FirstSight(FirstSightSettings(forwards=1, budget_per_min=60), clock)
    templates = [f"template {chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(200)]
    draws = np.full(200, 0.5)
    d = decide(templates, np.zeros(200, dtype=bool), draws, 0.01, None, first)
    assert d.first_sight == 60 and first.over_budget == 140
    assert (d.probability[d.forward] == 1.0).all()
    assert (d.probability[~d.forward] == 0.01).all()  # recorded as drawn at the audit rate
    clock.t = 30.0  # half a minute refills half the budget
    more = [t + " again" for t in templates]
    d = decide(more, np.zeros(200, dtype=bool), draws, 0.01, None, first)
    assert d.first_sight == 30


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=60),
    st.floats(0.0, 0.2),
    st.integers(1, 5),
)
def test_every_forward_is_explained_and_probabilities_are_honest(
    templates: list[str], rate: float, k: int
) -> None:
    cache = VerdictCache()
    cache.apply(fb("a", True, "llm"))
    cache.apply(fb("b", False, "human"))
    first = FirstSight(FirstSightSettings(forwards=k, budget_per_min=1e9))
    rng = np.random.default_rng(len(templates))
    flagged = rng.random(len(templates)) < 0.3
    draws = rng.random(len(templates))
    d = decide(templates, flagged, draws, rate, cache, first)
    for j, t in enumerate(templates):
        if t == "a":
            assert d.forward[j] and not d.audit[j]
        elif t == "b":
            assert d.forward[j] == (draws[j] < rate)
        elif not flagged[j]:
            assert d.forward[j] == (draws[j] < d.probability[j])
            assert rate <= d.probability[j] <= 1.0
        else:
            assert d.forward[j] and not d.audit[j]


def test_screened_suspects_say_why_and_with_what_probability() -> None:
    cfg = PipelineSettings(audit_rate=0.0)
    cache = VerdictCache()
    cache.apply(fb("info cache warmed", True, "human"))
    first = FirstSight(cfg.first_sight)
    lines = [b"ERROR disk failed", b"INFO cache warmed"] + [
        b"INFO user %d in" % i for i in range(6)
    ]
    out = screen_batch(
        lines, [None] * len(lines), lambda i: ("f", None, i), KeywordFilter(), cfg, None, None,
        cache, first,
    )  # fmt: skip
    (messages,) = out.messages.values()
    suspects = orjson.loads(messages[0])["suspects"]
    why = [(s["event"]["message"], s["reason"], s["verdict"], s["sampling_probability"])
           for s in suspects]  # fmt: skip
    assert why[0] == ("ERROR disk failed", "model", None, 1.0)
    assert why[1] == ("INFO cache warmed", "verdict", "human", 1.0)
    # "INFO user <num> in": new; forwarded on each of its first three sightings, p = 1 as recorded
    assert [w[1:] for w in why[2:5]] == [("first_sight", None, 1.0)] * 3
    # then with 3/4, 3/5, 3/6 by the line's own draw (the CRC of its bytes), as recorded
    assert all(w[1] == "first_sight" and w[3] in (0.75, 0.6, 0.5) for w in why[5:])
    assert out.flagged == 2 and out.audited == out.first_sight == len(why) - 2


class _Judge:
    """A test double with triage: relevant when the template says `failed`."""

    name = "judge"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def analyze(self, bundle: object) -> object:
        raise AssertionError("not called here")

    async def triage(self, items: list[object]) -> object:
        from sluice.models.analyst import Triaged, TriageVerdict

        self.calls.append([it.template for it in items])  # type: ignore[attr-defined]
        return Triaged(
            {
                it.template: TriageVerdict(id="N", relevant="failed" in it.template, reason="r")  # type: ignore[attr-defined]
                for it in items
            },
            prompt_tokens=10 * len(items),
        )


def test_new_templates_are_triaged_once_redacted_and_become_feedback() -> None:
    import asyncio

    from sluice.stream.analysis.triage import NewTemplates
    from sluice.stream.records import Event, Suspect, SuspectBatch

    def sus(msg: str, reason: str = "first_sight") -> Suspect:
        return Suspect(
            event=Event(ts=T0, service="api", message=msg), score=0.1, model_version="m",
            audit=True, sampling_probability=1.0, scope="s", reason=reason,  # type: ignore[arg-type]
        )  # fmt: skip

    nt = NewTemplates(PipelineSettings(), max_per_call=2)
    batch = [sus("job 1 failed for alice@example.com"), sus("job 2 failed for bob@example.com")]
    batch += [sus("job 3 started"), sus("disk full", reason="model"), sus("cache 4 warmed")]
    nt.offer(SuspectBatch(scope="s", suspects=batch))
    nt.offer(SuspectBatch(scope="s", suspects=batch))  # a replayed record adds nothing
    judge = _Judge()
    out = asyncio.run(nt.judge(judge, lambda: T0))  # type: ignore[arg-type]
    assert [len(c) for c in judge.calls] == [2, 1]  # three new templates, two per call
    assert all("@" not in t for c in judge.calls for t in c)  # redacted before it leaves
    assert {(f.template, f.label, f.source) for f in out} == {
        (judge.calls[0][0], True, "llm"), (judge.calls[0][1], False, "llm"),
        (judge.calls[1][0], False, "llm"),
    }  # fmt: skip
    assert nt.counters.templates == 3 and nt.counters.prompt_tokens == 30
    nt.offer(SuspectBatch(scope="s", suspects=batch))
    assert len(nt) == 0  # already judged: not sent again


def test_flagged_sightings_count_toward_a_templates_first_ones() -> None:
    first = FirstSight(FirstSightSettings(forwards=2, budget_per_min=1e9))
    flagged = np.array([True, True, False, False])
    d = decide(["t"] * 4, flagged, np.full(4, 0.99), 0.0, None, first)
    # the 3rd and 4th sightings are drawn with 2/3 and 2/4, as recorded
    assert d.probability[2:].tolist() == [2 / 3, 2 / 4] and not d.forward[2:].any()
