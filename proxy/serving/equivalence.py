"""The reuse verifier: a served model asked whether a refused look-alike is the same question.

Only pairs in the unsure band reach it (budget/reuse/equivalence.py). Deny by default: a verifier
that fails, times out or is unsure leaves the pair refused. Its tokens are overhead like an
audit's: the stats count them against the savings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from budget.reuse.equivalence import completion_p_same, equivalence_body
from proxy.backend.client import OpenAIBackend
from proxy.learning.reflection_writer import ReflectionCost
from proxy.listeners import tell
from proxy.metrics import ProxyMetrics

log = logging.getLogger(__name__)

Outcome = Literal["same", "different", "error"]
VerificationListener = Callable[[str, str, int], None]  # (tenant, outcome, tokens): the stats


@dataclass(frozen=True)
class Verification:
    outcome: Outcome
    p_same: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def same(self) -> bool:
        return self.outcome == "same"

    def header(self) -> str:
        return f"{self.outcome};p={self.p_same:.3f}"


class ReuseVerifier:
    def __init__(
        self,
        *,
        backend: OpenAIBackend,
        model: str,
        min_p_same: float,
        timeout_s: float,
        metrics: ProxyMetrics,
        listeners: Sequence[VerificationListener] = (),
        cost_listeners: Sequence[Callable[[ReflectionCost], None]] = (),
    ) -> None:
        self.backend = backend
        self.model = model
        self.min_p_same = min_p_same
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.listeners = listeners
        self.cost_listeners = cost_listeners

    async def check(self, stored: str, asked: str, tenant: str) -> Verification:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                payload, _ = await self.backend.complete(equivalence_body(stored, asked, self.model))
            usage = payload.get("usage") or {}
            probability = completion_p_same(payload)
            verification = Verification(
                "same" if probability >= self.min_p_same else "different",
                probability,
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or 0),
                time.perf_counter() - started,
            )
        except Exception as error:  # noqa: BLE001 - an unverified pair is a refused pair
            log.warning("reuse verifier failed: %r", error)
            verification = Verification("error", seconds=time.perf_counter() - started)
        self._book(tenant, verification)
        return verification

    def _book(self, tenant: str, verification: Verification) -> None:
        self.metrics.reuse_verifications.labels(tenant, verification.outcome).inc()
        self.metrics.reuse_verification_seconds.observe(verification.seconds)
        tokens = verification.prompt_tokens + verification.completion_tokens
        cost = ReflectionCost(
            tenant, "equivalence", verification.prompt_tokens, verification.completion_tokens, 0.0, self.model
        )
        tell(self.listeners, tenant, verification.outcome, tokens, what="verification")
        tell(self.cost_listeners, cost, what="verification cost")
