"""Normalization: masking is idempotent, never raises, and the batch cache key is exact."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.models.filter import (
    MAX_LINE_CHARS,
    cache_keys,
    decode_line,
    normalize,
    normalize_batch,
    template_of_key,
)

# Log-like text: the characters the masking rules care about, plus arbitrary unicode.
logish = st.text(
    alphabet=st.sampled_from([*list("0123456789abcdefxzABF-_.:/ =[]()<>\t\n\r"), "é", "ü", "\x00"]),
    max_size=80,
) | st.text(max_size=80)


@given(logish)
@settings(max_examples=400)
def test_normalize_is_idempotent_and_total(line: str) -> None:
    once = normalize(line)
    assert normalize(once) == once
    assert "\n" not in once
    assert not re.search(r"\d", once.encode("ascii", "ignore").decode())


@given(st.lists(logish, max_size=20))
def test_batch_equals_one_by_one(lines: list[str]) -> None:
    assert normalize_batch(lines) == [normalize(x) for x in lines]


@given(logish, st.randoms())
def test_digits_do_not_matter_to_the_template(line: str, rnd) -> None:  # type: ignore[no-untyped-def]
    """The cache key maps every digit to '1'; templates must not depend on which digit it was."""
    other = "".join(str(rnd.randint(0, 9)) if c in "0123456789" else c for c in line)
    assert normalize(other) == normalize(line)
    assert template_of_key(cache_keys([line])[0]) == normalize(line)


def test_masks_variable_parts() -> None:
    cases = {
        "081109 203530 147 INFO dfs.DataNode$DataXceiver: Receiving block blk_-160899968791 "
        "src: /10.250.19.102:54106 dest: /10.250.19.102:50010": (
            "<num> <num> <num> info dfs.datanode$dataxceiver: receiving block <blk> "
            "src: /<ip> dest: /<ip>"
        ),
        "2023-01-29T08:51:24.968Z ERROR order f3d4d4ef-693b-4456-8eed-59c0d717dd08 failed": (
            "<ts> error order <uuid> failed"
        ),
        "GET http://svc:8080/api/v1/orders?id=7 from /var/log/app/x.log at 0x7ffd5e8c": (
            "get <url> from <path> at <hex>"
        ),
        "2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 RAS KERNEL": (
            "<ts> r<num>-m<num>-n<num>-c:j<num>-u<num> ras kernel"
        ),
        "  spaced\t\tout  ": "spaced out",
        "": "",
    }
    for raw, want in cases.items():
        assert normalize(raw) == want, raw


def test_instances_of_one_template_collapse() -> None:
    a = "Connection to 10.0.0.1:5432 timed out after 3000 ms (trace 4bf92f3577b34da6a3ce929d0e0)"
    b = "Connection to 192.168.10.27:6543 timed out after 15 ms (trace 00f067aa0ba902b7a3ce92)"
    assert normalize(a) == normalize(b)


def test_huge_line_is_truncated_before_masking() -> None:
    line = "ERROR " + "x" * 1_000_000
    out = normalize(line)
    assert len(out) <= MAX_LINE_CHARS
    assert out.startswith("error ")


def test_invalid_utf8_decodes_with_replacement() -> None:
    text = decode_line(b"ERROR \xff\xfe\xfd disk \xc3")
    assert "\ufffd" in text
    assert normalize(text).startswith("error")


@given(st.lists(logish, max_size=40))
@settings(max_examples=300)
def test_re2_over_a_batch_masks_as_pythons_re_one_by_one(lines: list[str]) -> None:
    """The two engines of K (`mask_batch`): RE2 over many distinct keys at once, Python's `re`
    one by one; the same masked form for every key."""
    from sluice.models.filter import _normalize

    keys = list(dict.fromkeys(cache_keys(lines)))  # already masked: K again must hold them
    raw = [x.encode("utf-8", errors="replace").translate(_normalize._KEY_TABLE) for x in lines]
    for batch in (keys, raw):
        python = [_normalize._MASK.sub(b"1", k) for k in batch]
        original = _normalize._ARROW_FROM
        try:
            _normalize._ARROW_FROM = 0  # RE2 however few
            assert _normalize._mask_new(batch) == python
        finally:
            _normalize._ARROW_FROM = original


def test_a_batch_of_fresh_trace_ids_masks_to_one_form_per_shape() -> None:
    """Every line new (a trace id each), more than RE2's threshold: one masked form."""
    from sluice.models.filter import mask_batch

    lines = [f"GET /cart trace={i:032x} span={i * 7919:016x} took {i % 97} ms" for i in range(600)]
    forms, index = mask_batch(lines)
    assert forms == [b"get /cart trace=1 span=1 took 1 ms"]
    assert index.tolist() == [0] * 600
