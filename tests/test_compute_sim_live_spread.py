"""The risk: the live-run spread that says whether a live shortfall is luck is itself wrong (a spread
where the samples leave none, none where they leave some, or the recorded live difference misread)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.compute_sim import (
    live_spread,
    observed_live_points,
    sample_fit,
    simulate,
    spread_summary,
    standard_error,
    vote_tally,
)


def fixed(gold: str, finals: list[str], index: int = 0) -> dict:
    return {
        "pass": "fixed8-direct",
        "index": index,
        "level": "S0",
        "gold": gold,
        "finals": finals,
        "finish": ["stop"] * len(finals),
        "sample_tokens": [10] * len(finals),
        "correct": True,
    }


def test_unanimous_samples_leave_no_luck() -> None:
    records = [fixed("7", ["7"] * 8), fixed("3", ["4"] * 8, 1)]
    assert set(live_spread(records, 200, 0.80, None, 5)) == {0.0}


def test_split_samples_spread_one_run_around_the_expected_difference() -> None:
    records = [fixed("7", ["7", "9"] * 4)]
    summary = spread_summary(live_spread(records, 2000, 0.80, None, 5), observed=-100.0)
    assert summary["sd_points"] > 30  # one question decided by a coin flip either way
    assert abs(summary["expected_points"]) < 8  # both methods are a fair coin on it
    assert 0 < summary["share_at_or_below_observed"] < 0.5
    assert summary["p05_points"] == -100.0 and summary["p95_points"] == 100.0


def test_the_recorded_live_difference_is_vote_right_minus_fixed_right(tmp_path: Path) -> None:
    records = [fixed("7", ["7"] * 8, i) for i in range(4)]
    votes = [{"pass": "vote-nomem", "index": i, "level": "S0", "correct": i != 0} for i in range(4)]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"records": records + votes}))
    assert observed_live_points([str(path)], ["S0"]) == -25.0
    assert observed_live_points([str(path)], ["S4"]) is None


def run_file(tmp_path: Path, votes: list[str]) -> str:
    records = [fixed("7", ["7", "9"] * 4, i) for i in range(len(votes))]
    records += [
        {
            "pass": "vote-nomem",
            "index": i,
            "level": "S0",
            "votes": v,
            "units": sum(vote_tally(v).values()),
            "correct": True,
        }
        for i, v in enumerate(votes)
    ]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"records": records}))
    return str(path)


def test_live_samples_drawn_as_the_fixed_ones_fit(tmp_path: Path) -> None:
    path = run_file(tmp_path, ["7=2", "9=2", "7=2,9=1", "9=2", "7=2", "7=1,9=2"])
    fit = sample_fit([path], None, 500, 0.80, 5)
    assert fit["share_at_or_below"] > 0.05


def test_live_samples_the_fixed_run_never_gave_do_not_fit(tmp_path: Path) -> None:
    path = run_file(tmp_path, ["5=2"] * 6)
    assert sample_fit([path], None, 500, 0.80, 5)["share_at_or_below"] < 0.01


def test_the_votes_header_is_read_back_with_its_quoting() -> None:
    assert vote_tally("1%2C200=2,text%3A0=1") == {"1,200": 2, "text:0": 1}
    assert vote_tally(None) == {}


def test_the_offline_estimate_carries_its_standard_error_over_questions() -> None:
    assert standard_error([0.0, 0.0, 0.0]) == 0.0
    assert standard_error([1.0, -1.0]) == 1.0  # sd sqrt(2) over sqrt(2) questions
    same = [fixed("7", ["7"] * 8, i) for i in range(3)]
    assert simulate(same, 20, 0.80, None, 5)["accuracy_points_se"] == 0.0
