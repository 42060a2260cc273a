"""The chat completion pipeline: parse -> recall -> decide -> execute -> remember and account."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi.responses import JSONResponse, StreamingResponse

from budget.policy import BudgetPolicy, Decision, RequestFacts
from memory_store.base import MemoryStore
from memory_store.embedding.embedder import BatchingEmbedder
from memory_store.scope import MemoryKey, memory_key
from proxy.backend.client import OpenAIBackend
from proxy.backend.fanout import add_usage, complete_choices, stream_choices
from proxy.gateway.chat_request import ChatRequest, parse_chat_request, reuse_allowed
from proxy.gateway.errors import ProxyError
from proxy.gateway.sse import DONE, completion_chunks, event, iterate
from proxy.learning.memory_modes import uses_episodes
from proxy.metrics import ProxyMetrics
from proxy.serving.accounting import Accounting, RequestLedger
from proxy.serving.adaptive import AdaptiveCompute
from proxy.serving.audit import ReuseAuditor
from proxy.serving.background import BackgroundWork
from proxy.serving.equivalence import ReuseVerifier, Verification
from proxy.serving.exemplars import inject_exemplars, with_budget
from proxy.serving.learning_hooks import LearningHooks
from proxy.serving.recall import Recollection, recall
from proxy.serving.remember import EpisodeWriter
from proxy.serving.reuse import ZERO_USAGE, new_completion_id, reuse_response

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryParts:
    """What the pipeline uses of memory, when memory is on."""

    embedder: BatchingEmbedder
    store: MemoryStore
    writer: EpisodeWriter
    recall_k: int
    deadline_s: float
    auditor: ReuseAuditor | None = None  # the error budget on live traffic
    verifier: ReuseVerifier | None = None  # settles the unsure band (budget/reuse/equivalence.py)


@dataclass
class _StreamSeen:
    """What a relayed stream has shown so far of choice 0: enough to remember it."""

    text: list[str] = field(default_factory=list)
    finish: str | None = None
    completion_id: str | None = None
    template: dict[str, Any] = field(default_factory=lambda: {"object": "chat.completion.chunk"})

    def take(self, chunk: dict[str, Any], usage: dict[str, int]) -> bool:
        """Note a chunk; True when it carries choices to forward (the usage chunk is rewritten at the end)."""
        self.completion_id = self.completion_id or chunk.get("id")
        reported = chunk.pop("usage", None)
        if reported:
            add_usage(usage, reported)
        for choice in chunk.get("choices", []):
            if choice.get("index", 0) == 0:
                self.text.append((choice.get("delta") or {}).get("content") or "")
                self.finish = choice.get("finish_reason") or self.finish
        if chunk.get("choices"):
            self.template = chunk
            return True
        return False

    def payload(self) -> dict[str, Any]:
        choice = {"finish_reason": self.finish, "message": {"content": "".join(self.text)}}
        return {"id": self.completion_id, "choices": [choice]}


class ChatPipeline:
    def __init__(
        self,
        *,
        backend: OpenAIBackend,
        policy: BudgetPolicy,
        ledger: RequestLedger,
        metrics: ProxyMetrics,
        background: BackgroundWork,
        memory: MemoryParts | None = None,
        learning: LearningHooks | None = None,
        compute: AdaptiveCompute | None = None,
    ) -> None:
        self.backend = backend
        self.policy = policy
        self.ledger = ledger
        self.metrics = metrics
        self.background = background
        self.memory = memory
        self.learning = learning
        self.compute = compute

    async def handle(self, raw: bytes, headers: dict[str, str], tenant: str) -> JSONResponse | StreamingResponse:
        started = time.perf_counter()
        request, body = parse_chat_request(raw, headers)
        if request.adaptive:
            self._adaptive_compute().check_allowed(tenant)
        key = self._memory_key(tenant, request, body)
        recollection = await self._recall(key)
        mode = self.learning.mode_for(tenant, request.model, request.speedup.memory_mode) if self.learning else None
        decision = self.policy.decide(self._facts(request, key, recollection, mode), recollection.neighbours)
        verification = await self._verify(key, decision)
        if verification is not None and verification.same:
            decision = self.policy.verified(decision)
        account = Accounting(
            tenant=tenant,
            decision=decision,
            started=started,
            client_n=request.n,
            model=request.model,
            memory_mode=mode,
            memory_key=key,
            verification=verification,
        )
        if key is not None and mode is not None and self.learning is not None:
            body, account.reflection_id = await self.learning.prepare(key, body, mode, recollection, decision)
        if decision.tier == "reuse":
            if request.adaptive:
                self._adaptive_compute().drew_nothing(request, account)
            return await self._reuse(request, body, account)
        if request.stream and not request.adaptive:
            return await self._stream(request, body, key, recollection, account)
        return await self._complete(request, body, key, recollection, account)

    def _adaptive_compute(self) -> AdaptiveCompute:
        if self.compute is None:
            raise ProxyError(400, "speedup samples and refine are not available here", code="option_not_allowed")
        return self.compute

    async def _verify(self, key: MemoryKey | None, decision: Decision) -> Verification | None:
        """The verifier's word on the unsure band's candidate, when there is one and a verifier."""
        source = decision.verify_source
        verifier = self.memory.verifier if self.memory is not None else None
        if decision.tier == "reuse" or source is None or verifier is None or key is None:
            return None
        return await verifier.check(source.question, key.question, key.tenant)

    def _memory_key(self, tenant: str, request: ChatRequest, body: dict[str, Any]) -> MemoryKey | None:
        if request.speedup.memory == "off" or self.memory is None:
            return None
        return memory_key(tenant, body)

    async def _recall(self, key: MemoryKey | None) -> Recollection:
        if key is None or self.memory is None:
            return Recollection()
        memory = self.memory
        return await recall(memory.embedder, memory.store, key, memory.recall_k, memory.deadline_s, self.metrics)

    def _facts(
        self, request: ChatRequest, key: MemoryKey | None, recollection: Recollection, mode: str | None
    ) -> RequestFacts:
        facts = RequestFacts(
            client_max_tokens=request.client_max_tokens,
            client_n=request.n,
            memory_usable=key is not None and recollection.failure is None,
            episodes_allowed=mode is None or uses_episodes(mode),
        )
        if key is not None:
            facts.question = key.question
            facts.context_fingerprint = key.context_fingerprint
            facts.context = key.context
            facts.has_tools = key.has_tools
            facts.reuse_allowed = reuse_allowed(request)
            auditor = self.memory.auditor if self.memory is not None else None
            facts.folded_reuse_allowed = auditor is None or auditor.estimate.folded_reuse_allowed(key.tenant, key.scope)
        return facts

    # -- reuse -------------------------------------------------------------------------------

    async def _reuse(
        self, request: ChatRequest, body: dict[str, Any], account: Accounting
    ) -> JSONResponse | StreamingResponse:
        source = account.decision.reuse_source
        assert source is not None and self.memory is not None
        self.background.spawn(self.memory.store.arecord_hit(source.tenant, source.id))
        if self.memory.auditor is not None and account.decision.reuse_reason in ("folded", "verified"):
            # Only these can be a look-alike's answer: identical text would dilute the rate.
            self.memory.auditor.maybe_audit(body, source, account.tenant, request.model)
        account.response_id = new_completion_id()
        account.usage = dict(ZERO_USAGE)
        self.ledger.finish(account)
        if self.learning is not None:
            await self.learning.log_response(account)
        return reuse_response(request, source, account.response_id, account.headers())

    # -- whole answers -----------------------------------------------------------------------

    async def _complete(
        self,
        request: ChatRequest,
        body: dict[str, Any],
        key: MemoryKey | None,
        recollection: Recollection,
        account: Accounting,
    ) -> JSONResponse | StreamingResponse:
        """A whole answer: the token ladder, or a vote or refine (whose chosen answer a stream gets once chosen)."""
        send = _with_exemplars(body, account.decision)
        try:
            if request.adaptive:
                question = key.question if key is not None else ""
                payload = await self._adaptive_compute().answer(request, send, account.decision, question, account)
            else:
                payload = await self._laddered(send, account)
        except ProxyError as error:
            self._backend_failed(error)
            raise
        payload["usage"] = dict(account.usage)
        account.response_id = payload.get("id")
        self.ledger.finish(account)
        # Rendered before it is remembered: an answer the client cannot get is never stored.
        response = _render(request, payload, account.headers())
        await self._conclude(key, recollection, payload, account)
        return response

    async def _laddered(self, send: dict[str, Any], account: Accounting) -> dict[str, Any]:
        """The guided budget first; an answer cut off there is retried at the next rung (budget/compute/plan.py)."""
        decision = account.decision
        for attempt, rung in enumerate(decision.ladder):
            if attempt:
                account.escalated = True
                self.metrics.escalations.labels(account.tenant).inc()
            account.attempts += 1
            payload = await self._call(with_budget(send, rung), decision.n, account)
            if not _cut_off(payload):
                break
        return payload

    async def _call(self, body: dict[str, Any], n: int, account: Accounting) -> dict[str, Any]:
        payload, seconds = await complete_choices(self.backend, body, n)
        account.backend_seconds += seconds
        account.last_usage = payload.get("usage") or {}
        add_usage(account.usage, account.last_usage)
        return payload

    def _backend_failed(self, error: ProxyError) -> None:
        self.metrics.backend_errors.labels(error.code or str(error.status)).inc()

    # -- streaming ---------------------------------------------------------------------------

    async def _stream(
        self,
        request: ChatRequest,
        body: dict[str, Any],
        key: MemoryKey | None,
        recollection: Recollection,
        account: Accounting,
    ) -> StreamingResponse:
        # A streamed answer cannot be taken back, so guided streams get exemplars but keep the
        # client's budget: a cut-off could not be escalated after the text was sent.
        decision = account.decision
        send = _with_exemplars(body, decision)
        upstream = {
            **send,
            "stream": True,
            "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
        }
        asked = time.perf_counter()
        try:
            source = await stream_choices(self.backend, upstream, decision.n)
        except ProxyError as error:
            self._backend_failed(error)
            raise
        return StreamingResponse(
            self._relay(request, source, key, recollection, account, asked),
            media_type="text/event-stream",
            headers=account.headers(saved_tokens=0),
        )

    async def _relay(
        self,
        request: ChatRequest,
        source: AsyncIterator[dict[str, Any]],
        key: MemoryKey | None,
        recollection: Recollection,
        account: Accounting,
        backend_started: float,
    ) -> AsyncIterator[bytes]:
        seen = _StreamSeen()
        booked = failed = False
        try:
            async for chunk in source:
                if seen.take(chunk, account.usage):
                    yield event(chunk)
            booked = self._book_stream(account, seen, backend_started)
            # In its own task: a client that goes away now cancels only the wait, not the remembering.
            await asyncio.shield(self.background.spawn(self._conclude(key, recollection, seen.payload(), account)))
            if request.include_usage:
                yield event({**seen.template, "choices": [], "usage": dict(account.usage)})
            yield DONE
        except ProxyError as error:
            # OpenAI's envelope as the last event and no [DONE]: the client knows the answer is broken.
            failed = True
            self._backend_failed(error)
            yield event(error.envelope())
        except Exception:
            failed = True
            log.exception("relaying a stream failed")
            yield event(ProxyError(500, "the proxy failed while streaming", code="internal_error").envelope())
        finally:
            if not booked:
                self._book_stream(account, seen, backend_started)
                # Failed: logged, so that the response is known; cut off by the client: kept if it finished.
                self.background.spawn(self._conclude(key, recollection, seen.payload(), account, log_only=failed))
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await source.aclose()  # type: ignore[attr-defined]

    def _book_stream(self, account: Accounting, seen: _StreamSeen, backend_started: float) -> bool:
        account.response_id = seen.completion_id
        account.backend_seconds += time.perf_counter() - backend_started
        self.ledger.finish(account)
        return True

    # -- memory ------------------------------------------------------------------------------

    async def _conclude(
        self,
        key: MemoryKey | None,
        recollection: Recollection,
        payload: dict[str, Any],
        account: Accounting,
        log_only: bool = False,
    ) -> None:
        """After a backend answer, in one order on every path: log the response id (so feedback finds
        it), start the episode write, wait until it is durable (bounded), hand it to learning."""
        if key is None:
            return
        if self.learning is not None:
            await self.learning.log_response(account)
        vector = recollection.vector
        if log_only or vector is None or self.memory is None:
            return
        writer = self.memory.writer
        stored = writer.start(key, vector, payload, account)
        if stored is None:
            return
        if self.learning is not None:
            self.background.spawn(self.learning.after_answer(stored, vector, account))
        await writer.until_durable(stored, vector)


def _with_exemplars(body: dict[str, Any], decision: Decision) -> dict[str, Any]:
    if decision.tier != "guided":
        return body
    return inject_exemplars(body, decision.exemplars, decision.look_alikes)


def _render(request: ChatRequest, payload: dict[str, Any], headers: dict[str, str]) -> JSONResponse | StreamingResponse:
    if not request.stream:
        return JSONResponse(payload, headers=headers)
    choice = (payload.get("choices") or [{}])[0]
    content = (choice.get("message") or {}).get("content") or ""
    chunks = completion_chunks(
        str(payload.get("id") or new_completion_id()),
        str(payload.get("model") or request.model),
        int(payload.get("created") or time.time()),
        content,
        str(choice.get("finish_reason") or "stop"),
        payload.get("usage") if request.include_usage else None,
    )
    return StreamingResponse(iterate(chunks), media_type="text/event-stream", headers=headers)


def _cut_off(payload: dict[str, Any]) -> bool:
    return any(choice.get("finish_reason") == "length" for choice in payload.get("choices", []))
