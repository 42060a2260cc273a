"""What the serving stages ask of the learning subsystem; `proxy.learning.service.Learning` provides it."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import numpy as np

from budget.policy import Decision
from memory_store.episode import Episode
from memory_store.scope import MemoryKey
from proxy.serving.accounting import Accounting
from proxy.serving.recall import Recollection


class LearningHooks(Protocol):
    def mode_for(self, tenant: str, model: str, requested: str | None) -> str:
        """The memory mode of a request; an input to the policy."""
        ...

    async def prepare(
        self, key: MemoryKey, body: dict[str, Any], mode: str, recollection: Recollection, decision: Decision
    ) -> tuple[dict[str, Any], str | None]:
        """The body to send (with the nearest lesson, if the mode injects one) and that lesson's id."""
        ...

    async def log_response(self, account: Accounting) -> None:
        """Note the response id before the client sees it, so that feedback finds its way back. Never raises."""
        ...

    async def after_answer(
        self, stored: asyncio.Task[Episode | None], vector: asyncio.Future[np.ndarray], account: Accounting
    ) -> None:
        """Background: link the episode to its response, verify it, apply an early rating, learn."""
        ...
