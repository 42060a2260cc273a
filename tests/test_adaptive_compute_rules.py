"""The rules of adaptive compute, without a backend: when a vote stops, what a sample votes for,
how memory lowers the bar, and the token ladder."""

from __future__ import annotations

import pytest

from budget.compute.answers import AnswerFormat, answer_key
from budget.compute.plan import ComputeConfig, plan_rounds, plan_samples, token_ladder
from budget.compute.stopping import majority_confidence, next_wave, should_stop
from budget.policy import PolicyConfig


def test_unanimous_samples_stop_a_cold_vote_at_three() -> None:
    cold = ComputeConfig().cold_confidence
    assert not should_stop([2], cold)
    assert should_stop([3], cold)
    assert next_wave([], cold, remaining=8) == 3  # the first wave is the fewest that could end it


def test_a_split_vote_does_not_stop() -> None:
    cold = ComputeConfig().cold_confidence
    assert not should_stop([2, 1], cold)
    assert not should_stop([3, 3], cold)
    assert not should_stop([4, 1], cold)
    assert should_stop([5, 1], cold)  # a clear majority with dissent ends it too
    assert majority_confidence([4, 4]) == pytest.approx(0.5)


def test_the_next_wave_never_exceeds_what_is_left() -> None:
    cold = ComputeConfig().cold_confidence
    assert next_wave([2, 1], cold, remaining=2) == 2
    assert next_wave([1, 1, 1], cold, remaining=1) == 1


def test_memory_lowers_the_confidence_a_vote_needs() -> None:
    config = ComputeConfig()
    cold, familiar = plan_samples(config, 8, 0.0), plan_samples(config, 8, 1.0)
    assert familiar.confidence < cold.confidence
    assert next_wave([], familiar.confidence, 8) == 2 < next_wave([], cold.confidence, 8)


def test_the_clients_maximum_caps_the_plan() -> None:
    assert plan_samples(ComputeConfig(max_samples=16), 4, 0.0).max_samples == 4
    assert plan_samples(ComputeConfig(max_samples=6), 10, 0.0).max_samples == 6
    assert plan_rounds(ComputeConfig(), 3, 0.0).max_rounds == 3
    assert plan_rounds(ComputeConfig(), 3, 1.0).max_rounds == 2
    assert plan_rounds(ComputeConfig(), 1, 1.0).max_rounds == 1


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("so the total is \\boxed{42}.", "42"),
        ("Step 1 ... #### 1,200", "1200"),
        ("The answer is $7.50.", "7.5"),
        ("Answer: 12\nThat is 3 more than 9.", "12"),
        ("Tom has 7 apples.", "7"),
        ("Paris is the capital of France.", None),
    ],
)
def test_a_sample_votes_with_its_final_answer(text: str, key: str | None) -> None:
    assert answer_key(text, AnswerFormat()) == key


def test_a_configured_regex_decides_the_vote() -> None:
    fmt = AnswerFormat(kind="regex", pattern=r"Plan: (\w+)")
    assert answer_key("You want Plan: Pro for that.", fmt) == "pro"
    assert answer_key("No plan named.", fmt) is None


def test_an_uncompilable_regex_is_refused() -> None:
    with pytest.raises(ValueError):
        AnswerFormat(kind="regex", pattern="(")


def test_the_ladder_climbs_from_the_budget_to_the_clients_limit() -> None:
    assert token_ladder(100, 1024, [2.0]) == [100, 200, 1024]
    assert token_ladder(100, 150, [2.0]) == [100, 150]
    assert token_ladder(500, 500, [2.0]) == [500]
    assert token_ladder(None, 300, [2.0]) == [300]
    assert token_ladder(100, None, [2.0, 4.0]) == [100, 200, 400, None]


def test_a_ladder_that_does_not_climb_is_refused() -> None:
    with pytest.raises(ValueError):
        PolicyConfig(ladder_factors=[0.5])
