"""Self-refine with early stop: draft, check, revise only when the check fails; stop at the first pass.

The check is a DraftCheck (proxy/serving/refine_checks.py): the configured verifier, or by default
a second solve by the serving model that must reach the same answer. The last draft is not checked:
there is no round left to revise in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from budget.compute.plan import RefinePlan
from proxy.backend.client import OpenAIBackend
from proxy.backend.fanout import add_usage
from proxy.serving.refine_checks import DraftCheck

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
    def __init__(self, backend: OpenAIBackend, check: DraftCheck) -> None:
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
            result = await self.check.check(question, body, answer, usage)  # the task as asked, not the revisions
            if result.passed:
                break
            feedback = f"{result.hint} {REVISE_PROMPT}" if result.hint else REVISE_PROMPT
            messages = [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": feedback}]
        return RefineResult(payload, rounds, checks, draft_usage, draft_tokens)


def _content(payload: dict[str, Any]) -> str:
    choices = payload.get("choices") or [{}]
    content = (choices[0].get("message") or {}).get("content")
    return content if isinstance(content, str) else ""
