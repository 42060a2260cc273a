"""Self-refine with early stop: draft, check, revise only when the check fails; stop at the first pass.

The check is a DraftCheck (proxy/serving/refine_checks.py): the configured verifier, or by default
a second solve by the serving model that must reach the same answer. The last draft is not checked:
there is no round left to revise in. A revision that keeps the answer it was asked to reconsider
ends the refine too (`converged`): the model holds it, and a further round would be asked the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from budget.compute.answers import same_answer
from budget.compute.plan import RefinePlan
from proxy.backend.client import OpenAIBackend
from proxy.backend.fanout import add_usage
from proxy.serving.refine_checks import DraftCheck

# Why a refine ended: its check passed, a revision kept the answer, or no round was left.
RefineStop = Literal["passed", "converged", "max_rounds"]

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
    stop: RefineStop


class RefineRunner:
    def __init__(self, backend: OpenAIBackend, check: DraftCheck) -> None:
        self.backend = backend
        self.check = check

    async def run(self, body: dict[str, Any], plan: RefinePlan, question: str, usage: dict[str, int]) -> RefineResult:
        """Up to `plan.max_rounds` drafts; `usage` gets every draft's and every check's tokens."""
        messages = list(body.get("messages") or [])
        rounds = checks = draft_tokens = 0
        previous: str | None = None
        while True:
            payload, _ = await self.backend.complete({**body, "messages": messages})
            rounds += 1
            draft_usage = add_usage({}, payload.get("usage"))
            add_usage(usage, draft_usage)
            draft_tokens += draft_usage["completion_tokens"]
            answer = _content(payload)
            stop: RefineStop | None = None
            if previous is not None and same_answer(previous, answer) is True:
                stop = "converged"
            elif rounds >= plan.max_rounds:
                stop = "max_rounds"  # no round left to revise in: checking would only cost
            else:
                checks += 1
                if await self.check.check(question, body, answer, usage):  # the task as asked, not the revisions
                    stop = "passed"
            if stop is not None:
                return RefineResult(payload, rounds, checks, draft_usage, draft_tokens, stop)
            messages = revision_messages(messages, answer)
            previous = answer


def revision_messages(messages: list[dict[str, Any]], answer: str) -> list[dict[str, Any]]:
    """The conversation that asks for a revision of `answer` (the same whatever the check found)."""
    return [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": REVISE_PROMPT}]


def _content(payload: dict[str, Any]) -> str:
    choices = payload.get("choices") or [{}]
    content = (choices[0].get("message") or {}).get("content")
    return content if isinstance(content, str) else ""
