"""What one request cost and saved: the record behind headers, metrics and stats."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from budget.policy import Decision
from memory_store.scope import MemoryKey


@dataclass
class Accounting:
    """What one request cost and saved; feeds the response headers, metrics and stats."""

    tenant: str
    decision: Decision
    started: float
    client_n: int = 1
    usage: dict[str, int] = field(default_factory=dict)
    last_usage: dict[str, Any] = field(default_factory=dict)
    backend_seconds: float = 0.0
    escalated: bool = False
    response_id: str | None = None
    total_seconds: float = 0.0
    model: str = ""
    # Memory that learns (proxy/learning/service.py): the mode used, the lesson injected, the memory coordinates.
    memory_mode: str | None = None
    reflection_id: str | None = None
    memory_key: MemoryKey | None = None

    @property
    def saved_tokens(self) -> int:
        if self.decision.tier == "reuse":
            return self.decision.estimated_cold_tokens
        if self.decision.tier == "guided":
            cold = self.decision.estimated_cold_tokens * self.client_n
            return max(0, cold - self.usage.get("completion_tokens", 0))
        return 0

    @property
    def saved_seconds(self) -> float:
        if self.decision.tier == "reuse":
            return self.decision.estimated_cold_seconds
        if self.decision.tier == "guided" and self.saved_tokens > 0:
            return max(0.0, self.decision.estimated_cold_seconds - self.backend_seconds)
        return 0.0

    @property
    def completion_tokens(self) -> int:
        return int(self.usage.get("completion_tokens", 0))

    @property
    def prompt_tokens(self) -> int:
        return int(self.usage.get("prompt_tokens", 0))

    def headers(self, saved_tokens: int | None = None) -> dict[str, str]:
        timing = {}
        if self.total_seconds:
            # Standard Server-Timing: what the proxy itself added, and the backend's share.
            proxy_ms = max(0.0, self.total_seconds - self.backend_seconds) * 1000
            timing["server-timing"] = f"proxy;dur={proxy_ms:.2f}, backend;dur={self.backend_seconds * 1000:.2f}"
        return (
            timing
            | {
                "x-speedup-tier": self.decision.tier,
                "x-speedup-similarity": f"{self.decision.similarity:.4f}",
                "x-speedup-episodes": ",".join(self.decision.episode_ids),
                "x-speedup-saved-tokens": str(self.saved_tokens if saved_tokens is None else saved_tokens),
            }
            | self._memory_headers()
        )

    def _memory_headers(self) -> dict[str, str]:
        found = {"x-speedup-memory-mode": self.memory_mode, "x-speedup-reflection": self.reflection_id}
        return {name: value for name, value in found.items() if value}


class RequestObserver(Protocol):
    """Told of every finished chat request (stats, audit). Must be quick and must not raise."""

    def request_finished(self, account: Accounting) -> None: ...
