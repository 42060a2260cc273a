"""Invariants of the labelled question pairs for the reuse decision (bench/reuse_data.py, issue 12).

Fast: no model, no network; reads the two checked-in JSONL files and rebuilds them in-process.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

# bench/ is not an installed package: make the repo root importable under plain `pytest` too.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench import reuse_data as rd  # noqa: E402

Row = dict[str, Any]


def _load(path: Path) -> list[Row]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


PAIRS = _load(rd.PAIRS_PATH)
CONVERSATIONS = _load(rd.CONVERSATIONS_PATH)
SINGLE_CATEGORIES = (*rd.HIT_CATEGORIES, *rd.TRAP_CATEGORIES)
CONV_CATEGORIES = (*rd.CONV_HIT_CATEGORIES, *rd.CONV_TRAP_CATEGORIES)
REQUIRED_DOMAINS = {"billing", "retail", "home_services", "health", "travel", "it_accounts"}
BOTH = pytest.mark.parametrize("rows", [PAIRS, CONVERSATIONS], ids=["pairs", "conversations"])


def _text(value: Any) -> str:
    return rd.text_key(value)


def _share(rows: list[Row], predicate: Any) -> float:
    return sum(1 for row in rows if predicate(row)) / len(rows)


@pytest.mark.parametrize("seed_set", [rd.MAIN, rd.FRESH], ids=["main", "fresh"])
def test_checked_in_files_of_each_seed_set_equal_a_fresh_build(seed_set: rd.SeedSet) -> None:
    pairs, conversations = rd.build(seed_set)
    assert rd.render(pairs) == seed_set.pairs_path.read_text(encoding="utf-8")
    assert rd.render(conversations) == seed_set.conversations_path.read_text(encoding="utf-8")


def test_the_fresh_set_shares_no_question_with_the_main_set() -> None:
    fresh = _load(rd.FRESH.pairs_path) + _load(rd.FRESH.conversations_path)
    main = {_text(side) for row in PAIRS + CONVERSATIONS for side in (row["a"], row["b"])}
    assert fresh and all(row["split"] == rd.FRESH_SPLIT for row in fresh)
    assert not {_text(side) for row in fresh for side in (row["a"], row["b"])} & main


def test_an_odd_group_of_contexts_with_one_last_message_makes_a_triple() -> None:
    assert rd.couples([{"last": "x"}] * 3) == [[0, 1, 2]]


@BOTH
def test_every_line_has_the_fields_in_order(rows: list[Row]) -> None:
    for row in rows:
        assert tuple(row) == rd.FIELDS
        assert all(isinstance(row[k], str) and row[k] for k in ("id", "family", "domain", "label", "category"))
        assert row["split"] in rd.SPLITS
        assert isinstance(row["note"], str)
    assert len({row["id"] for row in rows}) == len(rows)


def test_single_question_counts_and_shares() -> None:
    assert len(PAIRS) >= 1200
    assert all(isinstance(row["a"], str) and isinstance(row["b"], str) for row in PAIRS)
    domains = {row["domain"] for row in PAIRS}
    assert domains >= REQUIRED_DOMAINS and rd.MATH_DOMAIN in domains
    assert _share(PAIRS, lambda r: r["domain"] in rd.SUPPORT_DOMAINS) >= 0.75
    assert _share(PAIRS, lambda r: r["domain"] == rd.MATH_DOMAIN) >= 0.10
    assert 0.45 <= _share(PAIRS, lambda r: r["label"] == "hit") <= 0.55


def test_conversation_counts_shares_and_shape() -> None:
    assert len(CONVERSATIONS) >= 400
    assert _share(CONVERSATIONS, lambda r: r["label"] == "hit") >= 0.35
    assert _share(CONVERSATIONS, lambda r: r["label"] == "trap") >= 0.35
    for row in CONVERSATIONS:
        for side in (row["a"], row["b"]):
            assert 2 <= len(side) <= 6, row["id"]
            assert side[-1]["role"] == "user", row["id"]
            assert all(set(m) == {"role", "content"} and m["role"] in ("user", "assistant") for m in side)
            assert all(m["content"].strip() for m in side)
            assert all(x["role"] != y["role"] for x, y in zip(side, side[1:], strict=False)), row["id"]


@pytest.mark.parametrize(
    ("rows", "categories", "minimum"),
    [(PAIRS, SINGLE_CATEGORIES, 15), (CONVERSATIONS, CONV_CATEGORIES, 10)],
    ids=["pairs", "conversations"],
)
def test_every_category_is_in_both_splits(rows: list[Row], categories: tuple[str, ...], minimum: int) -> None:
    counts = Counter((row["category"], row["split"]) for row in rows)
    assert {row["category"] for row in rows} == set(categories)
    for category in categories:
        for split in rd.SPLITS:
            assert counts[(category, split)] >= minimum, (category, split, counts[(category, split)])


@BOTH
def test_splits_are_about_half_per_domain_and_category(rows: list[Row]) -> None:
    for key, low in (("domain", 0.4), ("category", 0.35)):
        for name in {row[key] for row in rows}:
            group = [row for row in rows if row[key] == name]
            assert low <= _share(group, lambda r: r["split"] == "calibration") <= 1 - low, (key, name)


@BOTH
def test_labels_agree_with_categories(rows: list[Row]) -> None:
    for row in rows:
        assert row["label"] == rd.LABELS[row["category"]], row["id"]
    traps = [row for row in rows if row["label"] == "trap"]
    assert all(row["note"] for row in traps)


@BOTH
def test_splits_share_no_family_and_no_text(rows: list[Row]) -> None:
    split_of: dict[str, str] = {}
    for row in rows:
        assert split_of.setdefault(row["family"], row["split"]) == row["split"], row["family"]
    texts = {split: set() for split in rd.SPLITS}
    for row in rows:
        texts[row["split"]].update((_text(row["a"]), _text(row["b"])))
    assert not texts["calibration"] & texts["heldout"]
    b_texts = {split: {_text(r["b"]) for r in rows if r["split"] == split} for split in rd.SPLITS}
    assert not b_texts["calibration"] & b_texts["heldout"]


@BOTH
def test_no_duplicate_pair_and_a_differs_from_b(rows: list[Row]) -> None:
    keys = [(_text(row["a"]), _text(row["b"])) for row in rows]
    assert len(set(keys)) == len(keys)
    assert all(a != b for a, b in keys)


def test_families_derive_from_enough_distinct_hand_written_questions() -> None:
    bases = {row["a"] for row in PAIRS if row["domain"] in rd.SUPPORT_DOMAINS}
    templates = {seed["q"] for seed in rd.load_seed("math")}
    assert len(bases) + len(templates) >= 300
    assert len(bases) >= 300


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d+(?:[.,]\d+)*", text)


def test_math_hits_keep_numbers_and_traps_change_them() -> None:
    math = [row for row in PAIRS if row["domain"] == rd.MATH_DOMAIN]
    for row in math:
        if row["category"] == "math_reworded":
            assert sorted(_numbers(row["a"])) == sorted(_numbers(row["b"])), row["id"]
        if row["category"] == "math_numbers":
            assert sorted(_numbers(row["a"])) != sorted(_numbers(row["b"])), row["id"]
        assert re.search(r"answer \S+", row["note"]), row["id"]


def test_near_duplicates_keep_numbers_and_names() -> None:
    for row in PAIRS:
        if row["category"] in ("near_typo", "near_punctuation", "near_filler"):
            assert _numbers(row["a"]) == _numbers(row["b"]), row["id"]
        if row["category"] == "near_typo":
            assert [w for w in row["a"].split() if w[:1].isupper()] == [
                w for w in row["b"].split() if w[:1].isupper()
            ], row["id"]


def test_articles_agree_after_substitutions() -> None:
    texts = {row["b"] for row in PAIRS} | {m["content"] for row in CONVERSATIONS for m in row["b"]}
    for text in texts:
        for match in re.finditer(r"\b(an?) ([A-Za-z][\w-]*)", text, re.IGNORECASE):
            assert rd.article_for(match.group(2)) == match.group(1).lower(), text
