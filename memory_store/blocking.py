"""The one executor boundary: where a store's blocking call leaves the event loop.

Every async twin of a store method (`asearch`, `arecord`, `anearest`...) runs its sync
method through `run_blocking`, and nothing else in the stores picks a thread. One place,
so that:

- callers never decide per call site whether a store call is "fast enough" for the loop
  (SQLite can wait on a lock, Redis on a 0.25 s timeout, a prune can scan the log);
- the executor can change once (a bounded pool, a per-store thread) for every store;
- tests can prove that no async store call runs on the event loop thread.

`asyncio.to_thread` uses the loop's default executor and carries the caller's
contextvars over to the worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


async def run_blocking(func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `func(*args, **kwargs)` on a worker thread; the event loop keeps serving meanwhile."""
    return await asyncio.to_thread(func, *args, **kwargs)
