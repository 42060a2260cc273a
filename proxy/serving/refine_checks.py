"""How refine checks a draft: the operator's verifier, the model's yes/no, or a second solve that must agree.

Measured on six replay drafts with the bundled 0.5B model (docs/ADAPTIVE_COMPUTE.md), asking the
model "is this answer correct?" carried no signal: it said no to every correct draft. The default
check is therefore self-consistency: the model solves the task once more, independently, and the
draft passes when both reach the same final answer (budget/compute/answers.py).

A failed check does not tell the revision what the second solve found. Measured on held-out replay
streams, that answer misled more than it helped: the 0.5B's own second solve is right about as often
as its draft (seed 3: refine 40% right against 52% for always 3 rounds), and the 1.5B's answer never
turned one of 11 failed drafts right (seed 9). The revision is asked what the fixed method asks.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from budget.compute.answers import same_answer
from memory_store.embedding.embedder import BatchingEmbedder
from proxy.backend.client import OpenAIBackend
from proxy.backend.fanout import add_usage
from proxy.learning.verifier import Verifier


class DraftCheck(Protocol):
    async def check(self, question: str, body: dict[str, Any], answer: str, usage: dict[str, int]) -> bool:
        """Whether the draft passes; `usage` gets the check's own tokens."""
        ...


class VerifierCheck:
    """The configured verifier: a regex (free) or the model as judge (a short yes/no call)."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier

    async def check(self, question: str, body: dict[str, Any], answer: str, usage: dict[str, int]) -> bool:
        verdict = self.verifier.check_regex(answer)
        if verdict is not None:
            return verdict == "pass"
        model = body.get("model")
        judgement = await self.verifier.judge(question, answer, model if isinstance(model, str) else None)
        spent = judgement.prompt_tokens, judgement.completion_tokens
        add_usage(usage, {"prompt_tokens": spent[0], "completion_tokens": spent[1], "total_tokens": sum(spent)})
        return judgement.verdict != "fail"  # no clear verdict: no evidence to spend a round on


class ConsistencyCheck:
    """A second, independent solve; the draft passes when both reach the same answer. By the serving
    model, sampled; or by another model (`model` names it on its server), at temperature 0."""

    def __init__(
        self,
        backend: OpenAIBackend,
        embedder: BatchingEmbedder | None,
        answer_similarity: float,
        temperature: float = 0.7,
        model: str | None = None,
    ) -> None:
        self.backend = backend
        self.embedder = embedder
        self.answer_similarity = answer_similarity
        self.temperature = temperature
        self.model = model

    async def check(self, question: str, body: dict[str, Any], answer: str, usage: dict[str, int]) -> bool:
        solve = {**body, "temperature": self.temperature, "n": 1}
        if self.model is not None:
            solve["model"] = self.model
        payload, _ = await self.backend.complete(solve)
        add_usage(usage, payload.get("usage"))
        choice = (payload.get("choices") or [{}])[0]
        second = (choice.get("message") or {}).get("content")
        if not isinstance(second, str) or choice.get("finish_reason") != "stop":
            return True  # the second solve has no answer: no evidence against the draft
        return await self._same(answer, second)

    async def _same(self, first: str, second: str) -> bool:
        found = same_answer(first, second)
        if found is not None:
            return found
        if self.embedder is None:
            return False
        u, v = await self.embedder.embed(first), await self.embedder.embed(second)
        return float(np.dot(u, v)) >= self.answer_similarity
