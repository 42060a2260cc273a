"""Assemble the /v1/speedup/stats answer from the stats store and the memory (blocking; run in a thread)."""

from __future__ import annotations

import time
from typing import Any

from memory_store.base import MemoryStore
from memory_store.episode import Episode
from proxy.stats.pricing import Pricing
from proxy.stats.recorder import StatsRecorder
from proxy.stats.summary import Window, merge, series, span, totals

TOP_EPISODES = 10
EPISODES_SCANNED_PER_TENANT = 5000
QUESTION_CHARS = 160


def build_report(
    recorder: StatsRecorder,
    memory: MemoryStore | None,
    pricing: Pricing,
    window: Window,
    tenants: list[str] | None,
    now_s: float | None = None,
) -> dict[str, Any]:
    """The stats of `tenants` (None: every tenant) over `window`, ending now."""
    now_s = time.time() if now_s is None else now_s
    recorder.flush()  # this replica's last second of figures, so a caller sees its own requests
    start, end = span(window, now_s)
    rows = recorder.store.read(tenants, start, end, window.step_minutes)
    priced = pricing.configured
    return {
        "window": window.name,
        "tenant": "all" if tenants is None else ",".join(tenants),
        "from": start * 60,
        "to": end * 60,
        "step_seconds": window.step_minutes * 60,
        "generated_at": round(now_s, 3),
        "pricing": {"configured": priced, "currency": pricing.currency if priced else None},
        "totals": totals(merge(rows), priced),
        "series": series(rows, start, end, window.step_minutes, priced),
        **memory_report(memory, tenants),
    }


def memory_report(memory: MemoryStore | None, tenants: list[str] | None) -> dict[str, Any]:
    if memory is None:
        return {"memory": {"backend": "off", "episodes": {}, "total": 0}, "top_episodes": []}
    try:
        names = memory.tenants() if tenants is None else tenants
        counts = {name: memory.count(name) for name in names}
        episodes: list[Episode] = []
        for name in names:
            episodes += [e for e in memory.list_episodes(name, limit=EPISODES_SCANNED_PER_TENANT) if e.hits > 0]
    except Exception as error:  # noqa: BLE001 - a memory outage must not hide the figures
        return {"memory": {"error": str(error), "episodes": {}, "total": None}, "top_episodes": []}
    episodes.sort(key=lambda e: (e.hits, e.last_used_at), reverse=True)
    return {
        "memory": {"episodes": counts, "total": sum(counts.values())},
        "top_episodes": [_episode_row(e) for e in episodes[:TOP_EPISODES]],
    }


def _episode_row(episode: Episode) -> dict[str, Any]:
    question = episode.question if len(episode.question) <= QUESTION_CHARS else episode.question[:QUESTION_CHARS] + "…"
    return {
        "id": episode.id,
        "tenant": episode.tenant,
        "question": question,
        "hits": episode.hits,
        "rating": episode.rating,
        "source_tier": episode.source_tier,
        "baseline_completion_tokens": episode.baseline_completion_tokens,
        "estimated_saved_tokens": episode.hits * episode.baseline_completion_tokens,
        "last_used_at": round(episode.last_used_at, 3),
    }
