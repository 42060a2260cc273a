"""The app factory: the FastAPI gateway over a built container, opened and closed by its lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from proxy.admin.routes import router as admin_router
from proxy.container import AppContainer
from proxy.gateway.chat_routes import router as chat_router
from proxy.gateway.errors import install_error_handlers
from proxy.gateway.health_routes import router as health_router
from proxy.learning.feedback_routes import router as feedback_router
from proxy.stats.routes import router as stats_router

log = logging.getLogger("speedup-proxy")


def create_app(source: AppContainer | Callable[[], AppContainer]) -> FastAPI:
    """The app over a built container, or over a factory that the lifespan calls at startup
    (what `speedup-proxy serve` does: the embedded backend starts with the app, stops with it)."""
    built = source if isinstance(source, AppContainer) else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        container = built or await asyncio.to_thread(source)  # type: ignore[operator]
        _provide(app, container)
        log.info("memory %s, backend %s", container.settings.memory, container.backend.base_url)
        try:
            yield
        finally:
            # Uvicorn has stopped accepting and let in-flight requests finish: now the work they left.
            await container.aclose()

    app = FastAPI(title="speedup-proxy", version="0.1.0", docs_url=None, redoc_url=None, lifespan=lifespan)
    if built is not None:
        _provide(app, built)
    install_error_handlers(app)
    for router in (chat_router, health_router, feedback_router, admin_router, stats_router):
        app.include_router(router)
    return app


def _provide(app: FastAPI, container: AppContainer) -> None:
    """The parts routes ask for through proxy.gateway.dependencies; the only writer of app.state."""
    learned = container.learned
    state = app.state
    state.authenticator = container.authenticator
    state.max_body_bytes = container.settings.max_body_bytes
    state.pipeline = container.pipeline
    state.backend = container.backend
    state.memory = container.memory
    state.metrics = container.metrics
    state.stats = container.stats_sources
    state.feedback = learned.feedback if learned is not None else None
    state.admin = learned.admin if learned is not None else None
