"""The risk: bench.compute_sim calibrates thresholds on a copy of the vote's loop; if the copy drifts
from proxy/serving/vote.py, the calibrated numbers describe a rule the proxy does not run."""

from __future__ import annotations

import asyncio
import random

import pytest

from bench.compute_sim import Sample, majority, replay_vote
from budget.compute.answers import AnswerFormat
from budget.compute.plan import ComputeConfig, plan_samples
from proxy.serving.vote import VoteRunner
from tests.test_vote_gate import SURE, UNSURE, ScriptedBackend, sample

SURE_MEAN, UNSURE_MEAN = -0.01, -2.0  # the mean token log-probabilities of SURE and UNSURE


def scripted(samples: list[Sample]) -> list[dict]:
    return [
        sample(
            f"Answer: {s.key}" if s.key is not None else "Step 1: and then",
            SURE if s.mean_logprob == SURE_MEAN else UNSURE,
            finish="stop" if s.key is not None else "length",
        )
        for s in samples
    ]


@pytest.mark.parametrize("seed", range(60))
def test_the_offline_replay_draws_what_the_proxy_draws(seed: int) -> None:
    rng = random.Random(seed)
    answers = rng.choice([["7", "8"], ["1", "2", "3", "4", "5", "6", "7", "8"], ["7", "7", "7", "9"], ["3", None]])
    samples = [
        Sample(key=rng.choice(answers), tokens=5, mean_logprob=rng.choice([SURE_MEAN, UNSURE_MEAN])) for _ in range(8)
    ]
    gate = rng.choice([-0.075, None])
    config = ComputeConfig(
        confident_sample_logprob=gate,
        futility_after=rng.choice([4, 5, None]),
        unsure_split_logprob=rng.choice([-0.15, None]),
    )
    plan = plan_samples(config, 8, 0.0)
    backend = ScriptedBackend(scripted(samples))
    result = asyncio.run(VoteRunner(backend, None, 0.85).run({"messages": []}, plan, AnswerFormat(), {}))  # type: ignore[arg-type]
    chosen, drawn, _, stop = replay_vote(
        samples, plan.confidence, gate, config.futility_after, config.unsure_split_logprob
    )
    assert (drawn, stop) == (result.drawn, result.stop if result.stop != "no_answer" else "max_samples")
    expected = result.payload["choices"][0]["message"]["content"] if result.tally else None
    assert (f"Answer: {chosen}" if chosen is not None else None) == expected


@pytest.mark.parametrize("seed", range(30))
def test_the_offline_baseline_is_what_the_proxy_returns_after_all_8(seed: int) -> None:
    """The replay's accuracy is compared with `majority` of the same samples: it must be the answer
    the proxy returns when it draws all 8 (the fixed method), ties and abstentions included."""
    rng = random.Random(seed)
    answers = rng.choice([["7", "8"], ["1", "2", "3", "4", "5", "6", "7", "8"], ["7", "7", "9", None], ["3", None]])
    samples = [Sample(key=rng.choice(answers), tokens=5, mean_logprob=SURE_MEAN) for _ in range(8)]
    never_stops = ComputeConfig(cold_confidence=0.999999, futility_after=None)
    plan = plan_samples(never_stops, 8, 0.0)
    result = asyncio.run(
        VoteRunner(ScriptedBackend(scripted(samples)), None, 0.85).run({"messages": []}, plan, AnswerFormat(), {})  # type: ignore[arg-type]
    )
    assert result.drawn == 8
    expected = result.payload["choices"][0]["message"]["content"] if result.tally else None
    chosen = majority(samples)
    assert (f"Answer: {chosen}" if chosen is not None else None) == expected
