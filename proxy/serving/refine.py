"""Self-refine with early stop: draft, check, revise only when the check fails; stop at the first pass.

The check is the configured verifier (a regex an answer must match, or the model as judge), or,
where none is configured, the serving model asked whether its own answer is correct. A check that
gives no clear verdict passes: another round would be spent on no evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from budget.compute.plan import RefinePlan
from proxy.backend.client import OpenAIBackend
from proxy.backend.fanout import add_usage
from proxy.learning.verifier import Verifier

REVISE_PROMPT = (
    "A check of your answer above found it may be wrong. Solve the task again carefully, step by step, "
    "and give a corrected answer in the same format."
)


@dataclass(frozen=True)
class RefineResult:
    payload: dict[str, Any]
    rounds: int
    checks: int
    draft_usage: dict[str, int]  # the returned draft's own tokens
    draft_tokens: int  # completion tokens of all drafts, without the checks


class RefineRunner:
    def __init__(self, backend: OpenAIBackend, check: Verifier) -> None:
        self.backend = backend
        self.check = check

    async def run(self, body: dict[str, Any], plan: RefinePlan, question: str, usage: dict[str, int]) -> RefineResult:
        """Up to `plan.max_rounds` drafts; `usage` gets every draft's and every check's tokens."""
        messages = list(body.get("messages") or [])
        rounds = checks = draft_tokens = 0
        while True:
            payload, _ = await self.backend.complete({**body, "messages": messages})
            rounds += 1
            draft_usage = add_usage({}, payload.get("usage"))
            add_usage(usage, draft_usage)
            draft_tokens += draft_usage["completion_tokens"]
            answer = _content(payload)
            if rounds >= plan.max_rounds:
                break  # no round left to revise in: checking would only cost
            checks += 1
            if await self._passes(question, answer, body.get("model"), usage):
                break
            messages = [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": REVISE_PROMPT}]
        return RefineResult(payload, rounds, checks, draft_usage, draft_tokens)

    async def _passes(self, question: str, answer: str, model: Any, usage: dict[str, int]) -> bool:
        verdict = self.check.check_regex(answer)
        if verdict is not None:
            return verdict == "pass"
        judgement = await self.check.judge(question, answer, model if isinstance(model, str) else None)
        spent = judgement.prompt_tokens, judgement.completion_tokens
        add_usage(usage, {"prompt_tokens": spent[0], "completion_tokens": spent[1], "total_tokens": sum(spent)})
        return judgement.verdict != "fail"


def _content(payload: dict[str, Any]) -> str:
    choices = payload.get("choices") or [{}]
    content = (choices[0].get("message") or {}).get("content")
    return content if isinstance(content, str) else ""
