"""Under load no store call runs on the event loop: a slow disk or a busy lock can stall only the
request that waits for it, never every request the loop is serving."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import Counter
from typing import Any

import httpx

from tests.conftest import ProxyFactory, ServerThread, stub_url

STORE_METHODS = {
    "memory": ["search", "add", "get", "record_hit", "update", "list_episodes", "count", "tenants", "health"],
    "reflections": ["nearest", "put", "get", "list_reflections", "count", "tenants"],
    "responses": ["record", "get", "attach_episode", "set_rating", "note_scope", "scopes"],
}


def watch_threads(stores: dict[str, Any]) -> Counter[tuple[str, int]]:
    """Wrap every store method to count calls by (method, thread id)."""
    calls: Counter[tuple[str, int]] = Counter()
    for name, store in stores.items():
        for method in STORE_METHODS[name]:
            original = getattr(store, method)

            @functools.wraps(original)
            def counted(*args: Any, _original: Any = original, _name: str = f"{name}.{method}", **kwargs: Any) -> Any:
                calls[(_name, threading.get_ident())] += 1
                return _original(*args, **kwargs)

            setattr(store, method, counted)
    return calls


async def load(url: str, clients: int = 16, rounds: int = 12) -> list[int]:
    """A support bot's mix: popular questions repeated, new ones, ratings, stats and admin reads."""
    statuses: list[int] = []

    async def client(number: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            for turn in range(rounds):
                question = (
                    f"Where is my order {number * 100 + turn}?" if turn % 3 == 0 else "How do I reset my password?"
                )
                body = {"model": "stub", "temperature": 0, "messages": [{"role": "user", "content": question}]}
                answer = await http.post("/v1/chat/completions", json=body)
                statuses.append(answer.status_code)
                if turn % 4 == 1:
                    rating = {"response_id": answer.json()["id"], "rating": "good"}
                    statuses.append((await http.post("/v1/feedback", json=rating)).status_code)
                if turn % 6 == 5:
                    statuses.append((await http.get("/v1/speedup/stats")).status_code)
                    statuses.append((await http.get("/admin/tenants/local/episodes")).status_code)

    await asyncio.gather(*(client(i) for i in range(clients)))
    return statuses


def test_store_calls_never_run_on_the_event_loop_under_load(
    start_proxy: ProxyFactory, stub_backend: ServerThread
) -> None:
    proxy = start_proxy(stub_url(stub_backend), memory_modes={"default": "exemplars+reflect_update"})
    learning = proxy.container.learning
    calls = watch_threads(
        {"memory": proxy.container.memory, "reflections": learning.reflections, "responses": learning.responses}
    )
    statuses = asyncio.run(load(proxy.url))
    proxy.settle()
    assert set(statuses) == {200}
    loop_thread = proxy.server.thread.ident
    on_loop = {name: n for (name, thread), n in calls.items() if thread == loop_thread}
    assert on_loop == {}, f"store calls made on the event loop: {on_loop}"
    made = {name for name, _ in calls}
    # The load must have exercised the request path's stores, or the check above proves nothing.
    assert {"memory.search", "memory.add", "memory.record_hit", "responses.record", "responses.set_rating"} <= made
    assert {"responses.attach_episode", "reflections.nearest", "memory.list_episodes"} <= made
