"""Self-consistency with early stop: samples in waves, each answer reduced to a vote, the majority returned.

A wave is that many concurrent single-choice calls, so it works the same on backends that make n
choices per call (vLLM) and on those that reject n>1, and every sample's tokens are known. The
stopping rule and the wave sizes are budget/compute/stopping.py's; the answer keys budget/compute/answers.py's.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from budget.compute.answers import AnswerFormat, answer_key, votes_by_text
from budget.compute.confidence import is_confident, mean_logprob
from budget.compute.plan import SamplePlan
from budget.compute.stopping import futile, majority_confidence, next_wave, should_stop
from budget.reuse.text import normalise_text
from memory_store.embedding.embedder import BatchingEmbedder
from proxy.backend.client import OpenAIBackend
from proxy.backend.fanout import add_usage


@dataclass
class Ballot:
    """The votes so far: each sample's key (None: abstained, e.g. cut off) and the free-text clusters."""

    answer: AnswerFormat
    similarity: float
    choices: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)
    clusters: list[np.ndarray] = field(default_factory=list)

    def tally(self) -> dict[str, int]:
        return dict(Counter(k for k in self.keys if k is not None).most_common())

    def counts(self) -> list[int]:
        return list(self.tally().values())

    def answered_logprobs(self) -> list[float | None]:
        """Each answering sample's mean token log-probability (None where the backend sent none)."""
        return [mean_logprob(c.get("logprobs")) for c, k in zip(self.choices, self.keys, strict=True) if k is not None]

    def winner(self) -> tuple[int, float]:
        """The index of the first sample of the most voted answer, and that answer's share of all samples."""
        tally = self.tally()
        if not tally:
            return 0, 0.0
        top = max(tally.values())
        for index, key in enumerate(self.keys):
            if key is not None and tally[key] == top:  # ties go to the earliest answer
                return index, top / len(self.keys)
        raise AssertionError("unreachable")


# Why a vote ended: the Beta rule, a confident first sample, no two samples agreeing (a futility stop:
# after `futility_after` answers, or from the second when none was sure),
# every allowed sample drawn, not one sample with an answer (all cut off or empty), or every sample
# cut off with a bigger budget to try.
StopReason = Literal["agreement", "confident_sample", "no_consensus", "max_samples", "no_answer", "cut_off"]


@dataclass(frozen=True)
class VoteResult:
    payload: dict[str, Any]
    drawn: int
    agreement: float
    confidence: float
    chosen_usage: dict[str, int]
    tally: dict[str, int]  # answer key -> samples that gave it, most frequent first
    stop: StopReason


class VoteRunner:
    def __init__(self, backend: OpenAIBackend, embedder: BatchingEmbedder | None, answer_similarity: float) -> None:
        self.backend = backend
        self.embedder = embedder
        self.answer_similarity = answer_similarity

    async def run(
        self,
        body: dict[str, Any],
        plan: SamplePlan,
        answer: AnswerFormat,
        usage: dict[str, int],
        escalate_on_cut_off: bool = False,
    ) -> VoteResult:
        """Draw until the rule stops or `plan.max_samples` are drawn; `usage` gets every sample's tokens.

        With `escalate_on_cut_off` (a bigger token budget is left to try), a first wave cut off whole
        ends this vote at once instead of spending every sample on a budget too small to answer in.
        """
        ballot = Ballot(answer=answer, similarity=self.answer_similarity)
        template: dict[str, Any] = {}
        per_sample: list[dict[str, int]] = []
        gate = plan.confident_sample_logprob
        stop: StopReason = "max_samples"
        while len(ballot.keys) < plan.max_samples:
            first = not ballot.keys
            if first and gate is not None:
                wave = 1  # one sample, to see how sure the model is
            else:
                wave = next_wave(ballot.counts(), plan.confidence, plan.max_samples - len(ballot.keys))
            wave_body = {**body, "logprobs": True} if plan.wants_logprobs(first) else body
            # One call per sample, concurrently: each call's usage is exact (llama.cpp reports the usage
            # of one choice for n>1), and any backend serves it; vLLM still shares the prompt's prefix cache.
            calls = await asyncio.gather(*(self.backend.complete({**wave_body, "n": 1}) for _ in range(wave)))
            cast = len(ballot.keys)
            for payload, _ in calls:
                template = template or payload
                sample_usage = add_usage({}, payload.get("usage"))
                add_usage(usage, sample_usage)
                for choice in list(payload.get("choices") or [])[:1]:
                    await self._cast(ballot, choice)
                    per_sample.append(sample_usage)
            if len(ballot.keys) == cast:
                break  # a wave that cast nothing would repeat forever
            if escalate_on_cut_off and all(c.get("finish_reason") == "length" for c in ballot.choices):
                stop = "cut_off"
                break
            if first and ballot.keys[0] is not None and is_confident(ballot.choices[0].get("logprobs"), gate):
                stop = "confident_sample"
                break
            if should_stop(ballot.counts(), plan.confidence):
                stop = "agreement"
                break
            if futile(ballot.counts(), ballot.answered_logprobs(), plan.futility_after, plan.unsure_split_logprob):
                stop = "no_consensus"
                break
        if not ballot.tally() and stop != "cut_off":
            stop = "no_answer"
        index, agreement = ballot.winner()
        chosen = _as_asked({**ballot.choices[index], "index": 0}, body) if ballot.choices else {}
        result = {**template, "choices": [chosen] if chosen else []}
        return VoteResult(
            payload=result,
            drawn=len(ballot.keys),
            agreement=agreement,
            confidence=majority_confidence(ballot.counts()),
            chosen_usage=per_sample[index] if per_sample else {},
            tally=ballot.tally(),
            stop=stop,
        )

    async def _cast(self, ballot: Ballot, choice: dict[str, Any]) -> None:
        ballot.choices.append(choice)
        text = (choice.get("message") or {}).get("content")
        if choice.get("finish_reason") != "stop" or not isinstance(text, str) or not text.strip():
            ballot.keys.append(None)  # a cut-off or empty sample has no answer to vote with
            return
        key = answer_key(text, ballot.answer)
        if key is None and votes_by_text(ballot.answer):
            key = await self._text_key(ballot, text)
        ballot.keys.append(key)

    async def _text_key(self, ballot: Ballot, text: str) -> str:
        """Free text votes for the first earlier answer it is close enough to, else starts its own."""
        if self.embedder is None:
            return "text:" + normalise_text(text)
        vector = await self.embedder.embed(text)
        for index, representative in enumerate(ballot.clusters):
            if float(np.dot(vector, representative)) >= ballot.similarity:
                return f"text:{index}"
        ballot.clusters.append(vector)
        return f"text:{len(ballot.clusters) - 1}"


def _as_asked(choice: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The log-probabilities the gate asked for are the proxy's, not the client's: dropped unless it asked too."""
    if body.get("logprobs"):
        return choice
    return {**choice, "logprobs": None}
