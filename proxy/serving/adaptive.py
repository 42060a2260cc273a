"""Adaptive compute for one request: a vote or a refine, sized by memory, booked on the request's account."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from budget.compute.plan import ComputeConfig, plan_rounds, plan_samples
from budget.policy import Decision
from proxy.gateway.chat_request import ChatRequest
from proxy.gateway.errors import ProxyError
from proxy.serving.accounting import Accounting, ComputeUse
from proxy.serving.exemplars import with_budget
from proxy.serving.refine import RefineRunner
from proxy.serving.vote import VoteRunner


@dataclass(frozen=True)
class AdaptiveCompute:
    config: ComputeConfig
    vote: VoteRunner
    refine: RefineRunner
    open_by_default: bool  # no api keys configured: the one local user may spend

    def check_allowed(self, tenant: str) -> None:
        if not self.config.allows(tenant, self.open_by_default):
            raise ProxyError(
                403,
                "speedup samples and refine are not enabled for this tenant (compute.tenants in the config)",
                code="option_not_allowed",
                param="speedup",
            )

    def drew_nothing(self, request: ChatRequest, account: Accounting) -> None:
        """A reused answer: the fixed method would have drawn every sample or round."""
        account.compute = ComputeUse(method=_method(request), used=0, allowed=self._allowed(request))

    async def answer(
        self, request: ChatRequest, body: dict[str, Any], decision: Decision, question: str, account: Accounting
    ) -> dict[str, Any]:
        """One choice: the vote's majority or the refine's last draft; `account` gets every call's cost."""
        single = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "n")}
        started = time.perf_counter()
        try:
            if request.speedup.samples is not None:
                payload = await self._vote(request, single, decision, account)
            else:
                payload = await self._refine(request, single, decision, question, account)
        finally:
            account.backend_seconds += time.perf_counter() - started
        return payload

    async def _vote(
        self, request: ChatRequest, body: dict[str, Any], decision: Decision, account: Accounting
    ) -> dict[str, Any]:
        samples = request.speedup.samples
        assert samples is not None
        plan = plan_samples(self.config, samples.max, decision.familiarity, guided=bool(decision.exemplars))
        drawn = 0
        tally: dict[str, int] = {}
        result = None
        for step, rung in enumerate(decision.ladder):
            account.attempts += 1
            left = replace(plan, max_samples=plan.max_samples - drawn)  # the rungs share the client's maximum
            higher = step + 1 < len(decision.ladder)
            result = await self.vote.run(with_budget(body, rung), left, samples.answer, account.usage, higher)
            drawn += result.drawn
            tally = result.tally
            if result.stop != "cut_off" or drawn >= plan.max_samples:
                break  # answered within this budget (or no sample is left to draw)
        assert result is not None
        account.last_usage = result.chosen_usage
        account.compute = ComputeUse(
            method="vote",
            used=drawn,
            allowed=self._allowed(request),
            unit_tokens=account.completion_tokens / max(1, drawn),
            agreement=result.agreement,
            confidence=result.confidence,
            tally=tally,
            stop=result.stop,
        )
        return result.payload

    async def _refine(
        self, request: ChatRequest, body: dict[str, Any], decision: Decision, question: str, account: Accounting
    ) -> dict[str, Any]:
        refine = request.speedup.refine
        assert refine is not None
        plan = plan_rounds(self.config, refine.max_rounds, decision.familiarity)
        account.attempts += 1
        result = await self.refine.run(with_budget(body, decision.max_tokens), plan, question, account.usage)
        account.last_usage = result.draft_usage
        account.compute = ComputeUse(
            method="refine",
            used=result.rounds,
            allowed=self._allowed(request),
            unit_tokens=result.draft_tokens / max(1, result.rounds),
            checks=result.checks,
            stop=result.stop,
        )
        return result.payload

    def _allowed(self, request: ChatRequest) -> int:
        if request.speedup.samples is not None:
            return min(request.speedup.samples.max, self.config.max_samples)
        assert request.speedup.refine is not None
        return min(request.speedup.refine.max_rounds, self.config.max_refine_rounds)


def _method(request: ChatRequest) -> str:
    return "vote" if request.speedup.samples is not None else "refine"
