"""Votes on a scripted backend, for what a real model cannot be made to do on cue (send a chosen
confidence, a malformed trace, answers cut off or all different at will; the real-backend tests are
in test_adaptive_compute.py): only a logprob trace the gate can read, on a sample that answered, ends
a vote alone, anything else falls back to the Beta rule; answers that all differ end a vote early,
two competing ones do not; a vote cut off at a small budget moves up the token ladder at once, and
the rungs together never draw more than the client allowed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from budget.compute.answers import AnswerFormat
from budget.compute.plan import ComputeConfig, plan_samples
from budget.policy import Decision
from memory_store.episode import Episode
from proxy.gateway.chat_request import ChatRequest
from proxy.serving.accounting import Accounting
from proxy.serving.adaptive import AdaptiveCompute
from proxy.serving.vote import VoteRunner

SURE = {"content": [{"token": "7", "logprob": -0.01, "bytes": None, "top_logprobs": []}]}
UNSURE = {"content": [{"token": "7", "logprob": -2.0, "bytes": None, "top_logprobs": []}]}


class ScriptedBackend:
    """Answers each call with the next scripted choice; records the bodies it was sent."""

    def __init__(self, choices: list[dict[str, Any]]) -> None:
        self.choices = list(choices)
        self.bodies: list[dict[str, Any]] = []

    async def complete(self, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        self.bodies.append(body)
        choice = self.choices.pop(0) if self.choices else sample("Answer: 7")
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        return {"id": "x", "object": "chat.completion", "choices": [choice], "usage": usage}, 0.01


def sample(text: str, logprobs: Any = None, finish: str = "stop") -> dict[str, Any]:
    return {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": finish,
        "logprobs": logprobs,
    }


def run(
    choices: list[dict[str, Any]], body: dict[str, Any] | None = None, config: ComputeConfig | None = None
) -> tuple[Any, ScriptedBackend]:
    backend = ScriptedBackend(choices)
    plan = plan_samples(config or ComputeConfig(confident_sample_logprob=-0.075), 8, 0.0)
    runner = VoteRunner(backend, None, 0.85)  # type: ignore[arg-type]
    usage: dict[str, int] = {}
    result = asyncio.run(runner.run(body or {"messages": []}, plan, AnswerFormat(), usage))
    assert usage["completion_tokens"] == 5 * len(backend.bodies)  # every sample's tokens, gate or not
    return result, backend


def test_a_sure_first_sample_ends_the_vote_and_its_logprobs_are_not_returned() -> None:
    result, backend = run([sample("Answer: 7", SURE)])
    assert (result.drawn, result.stop) == (1, "confident_sample")
    assert backend.bodies[0]["logprobs"] is True
    assert result.payload["choices"][0]["logprobs"] is None


def test_a_client_that_asked_for_logprobs_keeps_them() -> None:
    result, _ = run([sample("Answer: 7", SURE)], {"messages": [], "logprobs": True})
    assert result.payload["choices"][0]["logprobs"] == SURE


@pytest.mark.parametrize(
    "first",
    [
        sample("Answer: 7", UNSURE),  # not sure enough
        sample("Answer: 7", None),  # the backend sent no logprobs
        sample("Answer: 7", ["not", "the", "openai", "shape"]),  # malformed: no evidence, no crash
        sample("Answer: 7", {"content": "oops"}),
        sample("Answer: 7", SURE, finish="length"),  # cut off: it has no answer to stop on
        sample("", SURE),  # empty
    ],
)
def test_anything_but_a_sure_answered_first_sample_falls_back_to_the_beta_rule(first: dict[str, Any]) -> None:
    result, backend = run([first])
    assert result.stop == "agreement" and result.drawn >= 2
    assert all("logprobs" not in body for body in backend.bodies[1:])  # only the first sample asks


def test_a_vote_where_no_sample_answers_says_so() -> None:
    cut = [sample("Answer: 7", SURE, finish="length") for _ in range(8)]
    result, backend = run(cut)
    assert (result.drawn, result.stop) == (8, "no_answer") and len(backend.bodies) == 8


def test_answers_that_all_differ_end_the_vote_before_the_maximum() -> None:
    lottery = [sample(f"Answer: {n}", UNSURE) for n in range(1, 9)]
    result, backend = run(lottery)
    # Waves of 1, 1, 2, 2: the first boundary with five answers or more is at the sixth sample.
    assert (result.drawn, result.stop) == (6, "no_consensus") and len(backend.bodies) == 6
    assert result.payload["choices"][0]["message"]["content"] == "Answer: 1"  # no majority: the earliest
    assert result.confidence < 0.8


def test_two_competing_answers_are_not_a_lottery() -> None:
    contested = [sample(f"Answer: {7 if n % 2 else 8}", UNSURE) for n in range(8)]
    result, backend = run(contested)
    assert (result.drawn, result.stop) == (8, "max_samples") and len(backend.bodies) == 8
    assert result.tally == {"8": 4, "7": 4}


def test_cut_off_samples_do_not_count_toward_the_futility_stop() -> None:
    mixed = [sample(f"Answer: {n}", UNSURE, finish="length" if n % 2 else "stop") for n in range(8)]
    result, _ = run(mixed)
    assert result.stop == "max_samples" and result.drawn == 8  # four answers, however many samples


def test_the_futility_stop_can_be_switched_off() -> None:
    lottery = [sample(f"Answer: {n}") for n in range(1, 9)]
    result, _ = run(lottery, config=ComputeConfig(futility_after=None))
    assert (result.drawn, result.stop) == (8, "max_samples")


UNSURE_SPLIT = ComputeConfig(confident_sample_logprob=-0.075, unsure_split_logprob=-0.15)


def test_two_unsure_answers_that_differ_end_the_vote_at_the_second() -> None:
    result, backend = run([sample("Answer: 1", UNSURE), sample("Answer: 2", UNSURE)], config=UNSURE_SPLIT)
    assert (result.drawn, result.stop) == (2, "no_consensus") and len(backend.bodies) == 2
    assert all(body["logprobs"] is True for body in backend.bodies)  # every sample's trace is read
    assert result.payload["choices"][0]["message"]["content"] == "Answer: 1"  # the earliest
    assert result.payload["choices"][0]["logprobs"] is None  # the proxy's, not the client's


@pytest.mark.parametrize(
    "second",
    [
        sample("Answer: 2", SURE),  # one sample is sure of itself: not a guess
        sample("Answer: 2", None),  # no trace: no evidence, no early stop
        sample("Answer: 1", UNSURE),  # they agree
    ],
)
def test_a_split_with_a_sure_or_unread_sample_or_agreement_goes_on(second: dict[str, Any]) -> None:
    result, _ = run([sample("Answer: 1", UNSURE), second, *[sample("Answer: 1", UNSURE)] * 6], config=UNSURE_SPLIT)
    assert result.drawn > 2 or result.stop == "agreement"
    assert result.stop != "no_consensus"


def test_an_unsure_cut_off_sample_does_not_count_as_an_answer_for_the_split() -> None:
    cut = sample("Step 1: and", UNSURE, finish="length")
    result, _ = run([sample("Answer: 1", UNSURE), cut, *[sample("Answer: 1", UNSURE)] * 6], config=UNSURE_SPLIT)
    assert result.stop == "agreement" and result.tally == {"1": result.drawn - 1}


def test_the_unsure_split_stop_is_off_by_default_and_on_guided_votes() -> None:
    split = [sample("Answer: 1", UNSURE), sample("Answer: 2", UNSURE), *[sample("Answer: 1", UNSURE)] * 6]
    result, backend = run(list(split))
    assert result.stop != "no_consensus" and result.drawn > 2
    assert all("logprobs" not in body for body in backend.bodies[1:])
    assert plan_samples(UNSURE_SPLIT, 8, 0.0, guided=True).unsure_split_logprob is None


def vote_on_a_ladder(
    choices: list[dict[str, Any]], ladder: list[int | None], config: ComputeConfig | None = None, **decision: Any
) -> tuple[Accounting, ScriptedBackend]:
    backend = ScriptedBackend(choices)
    compute = AdaptiveCompute(
        config=config or ComputeConfig(),
        vote=VoteRunner(backend, None, 0.85),  # type: ignore[arg-type]
        refine=None,  # type: ignore[arg-type]
        open_by_default=True,
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "2+5?"}], "speedup": {"samples": {"max": 6}}}
    request = ChatRequest.model_validate(body)
    account = Accounting(tenant="t", decision=Decision(tier="guided", ladder=ladder, **decision), started=0.0)
    asyncio.run(
        compute.answer(request, {k: v for k, v in body.items() if k != "speedup"}, account.decision, "", account)
    )
    return account, backend


def test_a_vote_cut_off_at_its_budget_moves_up_the_ladder_at_once() -> None:
    cut = [sample("Step 1: 2 plus", None, finish="length") for _ in range(2)]
    account, backend = vote_on_a_ladder(cut, [64, 128])
    budgets = [body["max_tokens"] for body in backend.bodies]
    assert budgets == [64, 64, 128, 128]  # one wave at 64, cut off whole; then the next rung answers
    assert account.attempts == 2 and account.compute is not None
    assert account.compute.used == 4 and account.compute.stop == "agreement"


def test_the_rungs_of_a_ladder_share_the_clients_maximum() -> None:
    cut = [sample("Step 1: 2 plus", None, finish="length") for _ in range(12)]
    account, backend = vote_on_a_ladder(cut, [64, 128, 256, None])
    assert len(backend.bodies) == 6  # the client allowed 6 samples in all, whatever the rungs
    assert account.compute is not None and account.compute.used == 6
    assert account.compute.stop in ("cut_off", "no_answer")


def test_a_guided_vote_is_not_ended_by_one_sure_sample() -> None:
    """Exemplars make the model sure without making it right: the gate is for questions asked without them."""
    exemplar = Episode(tenant="t", scope="s", question="2+4?", context_fingerprint="", answer="Answer: 6")
    gated = ComputeConfig(confident_sample_logprob=-0.075)
    account, backend = vote_on_a_ladder([sample("Answer: 7", SURE)] * 3, [None], gated, exemplars=[exemplar])
    assert all("logprobs" not in body for body in backend.bodies)
    assert account.compute is not None and account.compute.used >= 2 and account.compute.stop == "agreement"
    cold, _ = vote_on_a_ladder([sample("Answer: 7", SURE)], [None], gated)
    assert cold.compute is not None and (cold.compute.used, cold.compute.stop) == (1, "confident_sample")


def test_a_guided_vote_is_not_ended_by_answers_that_differ() -> None:
    """The futility stop was calibrated on questions asked without exemplars, like the gate."""
    exemplar = Episode(tenant="t", scope="s", question="2+4?", context_fingerprint="", answer="Answer: 6")
    lottery = [sample(f"Answer: {n}") for n in range(1, 13)]
    guided, _ = vote_on_a_ladder(list(lottery), [None], exemplars=[exemplar])
    assert guided.compute is not None and (guided.compute.used, guided.compute.stop) == (6, "max_samples")
    cold, _ = vote_on_a_ladder(list(lottery), [None])
    assert cold.compute is not None and (cold.compute.used, cold.compute.stop) == (6, "no_consensus")
