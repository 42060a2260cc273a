"""Work that runs after an answer: hit counts, episode writes, verification, ratings, lessons."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class BackgroundWork:
    """Owns every task started off the request path, so none is lost and shutdown can wait for all.

    A task may start others (an episode write starts its verification, a rating a lesson), so
    `drain` waits until no task is left, not only for the ones running when it was called.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background work failed: %r", task.exception())

    @property
    def pending(self) -> int:
        """How many tasks are still running; safe to read from another thread."""
        return len(self._tasks)

    async def drain(self, timeout_s: float) -> int:
        """Wait for all background work, including work it starts meanwhile; returns how many were left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait(list(self._tasks), timeout=remaining)
        left = len(self._tasks)
        if left:
            log.warning("shutdown: %d background tasks still running after %.1f s", left, timeout_s)
        return left
