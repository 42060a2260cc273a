"""The audit of reuses: a sample answered afresh in the background and compared with what was served."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from budget.reuse.audit import FalseReuseEstimate
from budget.reuse.text import normalise_text
from memory_store.embedding.embedder import BatchingEmbedder
from memory_store.episode import Episode
from proxy.backend.client import OpenAIBackend
from proxy.backend.fanout import complete_choices
from proxy.learning.reflection_writer import ReflectionCost
from proxy.listeners import tell
from proxy.metrics import ProxyMetrics
from proxy.serving.background import BackgroundWork

log = logging.getLogger(__name__)

AuditListener = Callable[[str, bool], None]  # (tenant, agreed): the stats


class ReuseAuditor:
    def __init__(
        self,
        *,
        backend: OpenAIBackend,
        embedder: BatchingEmbedder,
        estimate: FalseReuseEstimate,
        metrics: ProxyMetrics,
        background: BackgroundWork,
        rate: float,
        agreement: float,
        audit_listeners: Sequence[AuditListener] = (),
        cost_listeners: Sequence[Callable[[ReflectionCost], None]] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.backend = backend
        self.embedder = embedder
        self.estimate = estimate
        self.metrics = metrics
        self.background = background
        self.rate = rate
        self.agreement = agreement
        self.audit_listeners = audit_listeners
        self.cost_listeners = cost_listeners
        self._rng = rng or random.Random()

    def maybe_audit(self, body: dict[str, Any], source: Episode, tenant: str, model: str) -> bool:
        """Sample this reuse for an audit; True when one was started (in the background)."""
        if self.rate <= 0 or self._rng.random() >= self.rate:
            return False
        self.background.spawn(self._audit(body, source, tenant, model))
        return True

    async def _audit(self, body: dict[str, Any], source: Episode, tenant: str, model: str) -> None:
        try:
            fresh_body = {k: v for k, v in body.items() if k != "stream_options"} | {"stream": False}
            payload, _ = await complete_choices(self.backend, fresh_body, 1)
            fresh = str(((payload.get("choices") or [{}])[0].get("message") or {}).get("content") or "")
            agreed = await self._agree(fresh, source.answer)
        except Exception as error:  # noqa: BLE001 - an audit that fails tells nothing
            log.info("reuse audit not done: %s", error)
            return
        self._book(tenant, source.scope, agreed, payload.get("usage") or {}, model)

    async def _agree(self, fresh: str, served: str) -> bool:
        if normalise_text(fresh) == normalise_text(served):
            return True
        a, b = await self.embedder.embed(fresh), await self.embedder.embed(served)
        return float(np.dot(a, b)) >= self.agreement

    def _book(self, tenant: str, scope: str, agreed: bool, usage: dict[str, Any], model: str) -> None:
        self.estimate.record(tenant, scope, agreed)
        self.metrics.reuse_audits.labels(tenant, "agree" if agreed else "disagree").inc()
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        # The audit's tokens are overhead like a lesson's: the stats count them against the savings.
        cost = ReflectionCost(tenant, "audit", prompt, completion, seconds=0.0, model=model)
        tell(self.audit_listeners, tenant, agreed, what="audit")
        tell(self.cost_listeners, cost, what="audit cost")
