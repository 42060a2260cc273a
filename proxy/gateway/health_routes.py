"""GET /healthz and GET /metrics."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from memory_store.base import MemoryStore
from proxy.backend.client import OpenAIBackend
from proxy.gateway.chat_routes import backend
from proxy.gateway.dependencies import Auth, part
from proxy.metrics import ProxyMetrics

log = logging.getLogger(__name__)

PROBE_TTL_S = 5.0  # a health check every second must not become a backend call every second
PROBE_TIMEOUT_S = 1.0


class BackendProbe:
    """Whether the backend answers GET /models: asked at most once per ttl_s, given timeout_s."""

    def __init__(self, ttl_s: float = PROBE_TTL_S, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._checked_at = -math.inf
        self._reachable = False
        self._lock = asyncio.Lock()

    async def reachable(self, upstream: OpenAIBackend) -> bool:
        async with self._lock:  # concurrent health checks share one probe
            if time.monotonic() - self._checked_at >= self.ttl_s:
                self._reachable = await self._ask(upstream)
                self._checked_at = time.monotonic()
        return self._reachable

    async def _ask(self, upstream: OpenAIBackend) -> bool:
        try:
            await asyncio.wait_for(upstream.models(), self.timeout_s)
        except Exception as error:  # noqa: BLE001 - health reports faults, never raises them
            log.info("backend probe failed: %s", error or type(error).__name__)
            return False
        return True


# One probe per backend client; the probe holds no reference to it, so a closed app's entry goes with it.
_PROBES: weakref.WeakKeyDictionary[OpenAIBackend, BackendProbe] = weakref.WeakKeyDictionary()


def backend_probe(upstream: OpenAIBackend) -> BackendProbe:
    probe = _PROBES.get(upstream)
    if probe is None:
        probe = _PROBES[upstream] = BackendProbe()
    return probe


def memory_store(request: Request) -> MemoryStore | None:
    return part(request, "memory")


def proxy_metrics(request: Request) -> ProxyMetrics:
    return part(request, "metrics")


router = APIRouter()


async def _memory_report(memory: MemoryStore | None) -> tuple[dict[str, Any], bool]:
    """The store's health report and whether it is healthy."""
    if memory is None:
        return {"backend": "off"}, True
    try:
        report = await memory.ahealth()
    except Exception as error:  # noqa: BLE001 - health reports faults, never raises them
        report = {"error": str(error)}
    return report, not (report.get("degraded") or report.get("error"))


@router.get("/healthz")
async def healthz(
    request: Request,
    auth: Auth,
    memory: Annotated[MemoryStore | None, Depends(memory_store)],
    upstream: Annotated[OpenAIBackend, Depends(backend)],
) -> JSONResponse:
    """`status` for anyone; the backend, its reachability and the memory report for those who may observe."""
    report, memory_ok = await _memory_report(memory)
    reachable = await backend_probe(upstream).reachable(upstream)
    status = "ok" if memory_ok and reachable else "degraded"
    if not auth.may_observe(request):
        return JSONResponse({"status": status})
    return JSONResponse(
        {"status": status, "backend": upstream.base_url, "backend_reachable": reachable, "memory": report}
    )


@router.get("/metrics")
async def metrics(request: Request, auth: Auth, registry: Annotated[ProxyMetrics, Depends(proxy_metrics)]) -> Response:
    auth.require_observer(request)
    return Response(registry.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
