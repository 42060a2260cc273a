"""Invariants of the S0..S4 replay stream (bench/replay_dataset.py) and its report table."""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("reasoning_gym")

# bench/ is not an installed package: make the repo root importable under plain `pytest` too.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench.replay_dataset import (  # noqa: E402
    LEVELS,
    REWORD_FUNCTION_WORDS,
    TEMPLATE_DENYLIST,
    build_replay_stream,
    eligible_templates,
    extract_final_number,
    generate_instance,
    is_correct,
    items_by_level,
    numbers_in,
    reword,
    valid_instance,
)
from bench.report import format_level_table, summarize_levels  # noqa: E402

SEEDS = (0, 1, 7)


def capitalised(text: str) -> Counter[str]:
    """Capitalised tokens except the function words the rewording may add or drop."""
    words = re.findall(r"\b[A-Z][A-Za-z'-]*", text)
    return Counter(w for w in words if w not in REWORD_FUNCTION_WORDS)


@pytest.fixture(scope="module", params=SEEDS)
def stream(request):
    return build_replay_stream(groups=10, seed=request.param)


def pairs(stream, level):
    by = items_by_level(stream)
    return list(zip(by["S0"], by[level], strict=True))


def test_shape_and_order(stream):
    assert len(stream) == 5 * 10
    assert [it.level for it in stream] == [lv for lv in LEVELS for _ in range(10)]
    for lv, items in items_by_level(stream).items():
        assert [it.group for it in items] == list(range(10)), lv
    for it in stream:
        assert re.fullmatch(r"\d+", it.gold), it
        assert len(it.question) < 300 or it.level == "S2"


def test_deterministic():
    assert build_replay_stream(groups=6, seed=3) == build_replay_stream(groups=6, seed=3)
    assert build_replay_stream(groups=6, seed=3) != build_replay_stream(groups=6, seed=4)


def test_gold_matches_generator(stream):
    for it in stream:
        ex = generate_instance(it.template, it.instance_seed)
        assert is_correct(str(ex["answer"]), it.gold)
        if it.level != "S2":
            assert ex["question"] == it.question


def test_s1_is_exact_repeat(stream):
    for s0, s1 in pairs(stream, "S1"):
        assert s1.question == s0.question
        assert s1.gold == s0.gold and s1.template == s0.template


def test_s2_rewording_keeps_numbers_and_names(stream):
    for s0, s2 in pairs(stream, "S2"):
        assert s2.question != s0.question
        assert s2.gold == s0.gold and s2.template == s0.template
        assert Counter(numbers_in(s2.question)) == Counter(numbers_in(s0.question))
        assert capitalised(s2.question) == capitalised(s0.question), (s0.question, s2.question)
        variables = generate_instance(s0.template, s0.instance_seed)["metadata"].get("variables", {})
        for value in variables.values():
            if isinstance(value, str) and value[:1].isupper():
                assert value in s2.question


@pytest.mark.parametrize("variant", range(5))
def test_reword_keeps_numbers_on_every_eligible_template(variant):
    for t in eligible_templates():
        for seed in (11, 12):
            q = generate_instance(t, seed)["question"]
            r = reword(q, variant)
            assert r != q
            assert Counter(numbers_in(r)) == Counter(numbers_in(q)), (t, q, r)
            assert capitalised(r) == capitalised(q), (t, q, r)
            assert re.findall(r"\d+", r) == re.findall(r"\d+", q)  # same digits, same order


def test_s3_same_template_other_numbers(stream):
    for s0, s3 in pairs(stream, "S3"):
        assert s3.template == s0.template
        assert s3.instance_seed != s0.instance_seed
        assert s3.question != s0.question
        assert sorted(numbers_in(s3.question)) != sorted(numbers_in(s0.question))
    # gold differs whenever the template allows it; with 10 groups nearly always
    assert sum(s0.gold != s3.gold for s0, s3 in pairs(stream, "S3")) >= 8


def test_s4_templates_disjoint_from_groups(stream):
    by = items_by_level(stream)
    group_templates = {it.template for it in by["S0"]}
    s4_templates = [it.template for it in by["S4"]]
    assert len(group_templates) == 10
    assert not group_templates & set(s4_templates)
    assert len(set(s4_templates)) == len(s4_templates)
    for t in group_templates | set(s4_templates):
        assert t in eligible_templates() and t not in TEMPLATE_DENYLIST


@pytest.mark.parametrize(("template", "seed"), [(3, 12), (4, 6), (75, 1), (99, 32)])
def test_instances_with_truncated_gold_are_rejected(template, seed):
    # e.g. "1656/60=27" hours, "5*0.5=2" tubes, "117.10 - 53.10 = 63" (float truncation)
    assert valid_instance(generate_instance(template, seed), 300) is None


def test_too_many_groups_rejected():
    with pytest.raises(ValueError):
        build_replay_stream(groups=len(eligible_templates()))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: 1,234", "1234"),
        ("So it costs $12.00", "12"),
        ("The answer is 7.", "7"),
        ("x = 12.0", "12"),
        ("12.50 dollars", "12.5"),
        ("First 3 + 4 = 7, then 7 * 2 = 14.\nAnswer: 14", "14"),
        ("**Answer:** 42 apples (that is 3 dozen and 6)", "42"),
        ("#### 1,000,000", "1000000"),
        ("It drops to -5 degrees", "-5"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_final_number(text, expected):
    assert extract_final_number(text) == expected


def test_is_correct():
    assert is_correct("Answer: 1,234", "1234")
    assert is_correct("It costs $12.00", "12")
    assert is_correct("The answer is 7.", "7")
    assert is_correct("Answer: 12.0", "12")
    assert not is_correct("Answer: 13", "12")
    assert not is_correct("I don't know", "12")
    assert not is_correct("", "12")


def test_format_level_table():
    records = []
    for lv, tier, tok in (("S0", "cold", 100), ("S1", "reuse", 0), ("S2", "reuse", 0), ("S3", "guided", 50),
                          ("S4", "cold", 100)):
        records.append({"pass": "direct", "level": lv, "correct": True, "completion_tokens": 100,
                        "latency_s": 1.0, "tier": None})
        records.append({"pass": "proxy", "level": lv, "correct": lv != "S4", "completion_tokens": tok,
                        "latency_s": 0.5, "tier": tier})
    table = format_level_table(records)
    for name in ("S0", "S1", "S2", "S3", "S4", "S1-S3"):
        assert re.search(rf"^{name}\s", table, re.M), table
    assert "reuse at S3: 0" in table
    rows = {r["level"]: r for r in summarize_levels(records)}
    assert rows["S1-S3"]["token_reduction_pct"] == pytest.approx(100 * (300 - 50) / 300)
    assert rows["S1-S3"]["tiers"] == {"reuse": 2, "guided": 1, "cold": 0}
    assert rows["S4"]["proxy"]["accuracy"] == 0.0
    records.append({"pass": "proxy", "level": "S3", "correct": False, "completion_tokens": 0,
                    "latency_s": 0.1, "tier": "reuse"})
    assert "reuse at S3: 1" in format_level_table(records)
