"""The rules of adaptive compute, without a backend: when a vote stops, what a sample votes for,
how memory lowers the bar, and the token ladder."""

from __future__ import annotations

import pytest

from budget.compute.answers import AnswerFormat, answer_key, same_answer
from budget.compute.confidence import is_confident, mean_logprob
from budget.compute.plan import ComputeConfig, plan_rounds, plan_samples, token_ladder
from budget.compute.stopping import majority_confidence, next_wave, no_consensus, should_stop, unsure_split
from budget.policy import PolicyConfig


def test_unanimous_samples_stop_a_cold_vote_at_two() -> None:
    cold = ComputeConfig().cold_confidence
    assert not should_stop([1], cold)  # one sample alone never ends a vote by agreement
    assert should_stop([2], cold)
    assert next_wave([], cold, remaining=8) == 2  # the first wave is the fewest that could end it


def test_a_split_vote_does_not_stop() -> None:
    cold = ComputeConfig().cold_confidence
    assert not should_stop([2, 1], cold)
    assert not should_stop([3, 3], cold)
    assert not should_stop([4, 2], cold)
    assert should_stop([3, 1], cold)  # a clear majority with dissent ends it too
    assert majority_confidence([4, 4]) == pytest.approx(0.5)


def test_the_next_wave_never_exceeds_what_is_left() -> None:
    cold = ComputeConfig().cold_confidence
    assert next_wave([2, 2], cold, remaining=2) == 2
    assert next_wave([1, 1, 1], cold, remaining=1) == 1


def test_memory_lowers_the_confidence_a_vote_needs() -> None:
    config = ComputeConfig()
    cold, familiar = plan_samples(config, 8, 0.0), plan_samples(config, 8, 1.0)
    assert familiar.confidence < cold.confidence
    assert should_stop([4, 2], familiar.confidence) and not should_stop([4, 2], cold.confidence)
    old = ComputeConfig(cold_confidence=0.9, familiar_confidence=0.85)  # the bar that also starts lower
    assert next_wave([], plan_samples(old, 8, 1.0).confidence, 8) == 2 < next_wave([], 0.9, 8)


def test_the_confident_sample_gate_reads_the_mean_token_logprob() -> None:
    sure = {"content": [{"token": "4", "logprob": -0.01}, {"token": ".", "logprob": -0.05}]}
    unsure = {"content": [{"token": "4", "logprob": -0.01}, {"token": ".", "logprob": -1.2}]}
    assert mean_logprob(sure) == pytest.approx(-0.03)
    assert is_confident(sure, -0.075) and not is_confident(unsure, -0.075)
    assert not is_confident(None, -0.075) and not is_confident({"content": []}, -0.075)  # no logprobs: no gate
    assert not is_confident(sure, None)  # the gate is off by default
    assert ComputeConfig().confident_sample_logprob is None
    gated = ComputeConfig(confident_sample_logprob=-0.075)
    assert plan_samples(gated, 8, 0.0).confident_sample_logprob == -0.075


def test_exemplars_in_the_prompt_switch_the_confident_sample_gate_off() -> None:
    """Guided samples were sure of themselves and wrong a third of the time on the held-out replay."""
    gated = ComputeConfig(confident_sample_logprob=-0.075)
    assert plan_samples(gated, 8, 0.0, guided=True).confident_sample_logprob is None
    assert plan_samples(gated, 8, 1.0, guided=True).confident_sample_logprob is None


def test_only_answers_that_all_differ_are_a_lottery() -> None:
    futility = ComputeConfig().futility_after
    assert futility == 5
    assert no_consensus([1, 1, 1, 1, 1], futility)
    assert not no_consensus([1, 1, 1, 1], futility)  # too few answers to tell
    assert not no_consensus([2, 1, 1, 1, 1], futility)  # two agree: the rule may still find a majority
    assert not no_consensus([], futility)  # abstentions are not answers
    assert not no_consensus([1] * 8, None)  # off


def test_only_unsure_answers_that_all_differ_are_a_guess() -> None:
    assert unsure_split([1, 1], [-0.3, -0.2], -0.15)
    assert not unsure_split([1, 1], [-0.3, -0.1], -0.15)  # one was sure of itself
    assert not unsure_split([1, 1], [-0.3, None], -0.15)  # no trace: no evidence
    assert not unsure_split([2], [-0.3, -0.2], -0.15)  # they agree
    assert not unsure_split([1], [-0.3], -0.15)  # one answer is no split
    assert not unsure_split([1, 1], [-0.3, -0.2], None)  # off
    assert ComputeConfig().unsure_split_logprob is None  # model-specific, like the gate


def test_exemplars_in_the_prompt_switch_the_futility_stop_off() -> None:
    assert plan_samples(ComputeConfig(), 8, 0.0).futility_after == 5
    assert plan_samples(ComputeConfig(), 8, 0.5, guided=True).futility_after is None


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


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("3 + 4 = 7.\nAnswer: 7", "Let me check: 7 apples.\nAnswer: $7.00", True),  # one value, other words
        ("Answer: 7", "Answer: 8", False),
        ("Answer: 7", "I am not sure.", False),  # only one states an answer
        ("Paris is the capital.", "paris is the capital", True),
        ("", "", False),  # two empty replies agree on nothing
        ("Paris is the capital.", "It is Lyon.", None),  # free texts that differ: only meaning can tell
    ],
)
def test_two_solutions_agree_by_their_final_answers(first: str, second: str, same: bool | None) -> None:
    assert same_answer(first, second) is same


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
