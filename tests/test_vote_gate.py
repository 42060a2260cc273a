"""The confident-first-sample gate, on a scripted backend: only a logprob trace the gate can read, on a
sample that answered, ends a vote alone; anything else falls back to the Beta rule. A real model cannot
be made to send a chosen confidence or a malformed trace on cue (the real-backend test is in
test_adaptive_compute.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from budget.compute.answers import AnswerFormat
from budget.compute.plan import ComputeConfig, plan_samples
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


def run(choices: list[dict[str, Any]], body: dict[str, Any] | None = None) -> tuple[Any, ScriptedBackend]:
    backend = ScriptedBackend(choices)
    plan = plan_samples(ComputeConfig(confident_sample_logprob=-0.075), 8, 0.0)
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
