"""The chat completion pipeline: parse -> recall -> decide -> execute -> remember and account."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from budget.policy import Decision, RequestFacts
from memory_store.episode import Usage
from memory_store.scope import MemoryKey, memory_key
from proxy.backend.fanout import add_usage, complete_fanout, stream_fanout
from proxy.container import AppContainer
from proxy.gateway.chat_request import ChatRequest, parse_chat_request, reuse_allowed
from proxy.gateway.errors import ProxyError
from proxy.gateway.sse import DONE, completion_chunks, event
from proxy.serving.accounting import Accounting
from proxy.serving.exemplars import inject_exemplars, with_budget
from proxy.serving.recall import Recollection, recall
from proxy.serving.remember import remember, skip_reason

log = logging.getLogger(__name__)

WRITE_BEFORE_ANSWER_S = 1.0


class ChatPipeline:
    def __init__(self, container: AppContainer) -> None:
        self.c = container

    async def handle(self, raw: bytes, headers: dict[str, str], tenant: str) -> JSONResponse | StreamingResponse:
        started = time.perf_counter()
        request, body = parse_chat_request(raw, headers)
        key = self._memory_key(tenant, request, body)
        recollection = Recollection()
        if key is not None and self.c.embedder is not None and self.c.memory is not None:
            recollection = await recall(
                self.c.embedder,
                self.c.memory,
                key,
                k=max(8, self.c.policy.config.max_exemplars),
                deadline_s=self.c.settings.memory_deadline_ms / 1000,
                metrics=self.c.metrics,
            )
        decision = self._decide(request, key, recollection)
        plan = self.c.learning.plan(tenant, request, body, key, recollection, decision) if self.c.learning else None
        if plan is not None:  # the memory mode may drop tiers and add a lesson to the body
            decision, body = plan.decision, plan.body
        account = Accounting(tenant=tenant, decision=decision, started=started, client_n=request.n, model=request.model)
        if plan is not None:
            plan.annotate(account, key)
        if decision.tier == "reuse":
            return self._reuse(request, account)
        if request.stream:
            return await self._stream(request, body, key, recollection, account)
        return await self._complete(request, body, key, recollection, account)

    def _memory_key(self, tenant: str, request: ChatRequest, body: dict[str, Any]) -> MemoryKey | None:
        if request.speedup.memory == "off" or self.c.memory is None:
            return None
        return memory_key(tenant, body)

    def _decide(self, request: ChatRequest, key: MemoryKey | None, recollection: Recollection) -> Decision:
        if key is None or recollection.failure is not None:
            return Decision(tier="cold", max_tokens=request.client_max_tokens, n=request.n)
        facts = RequestFacts(
            question=key.question,
            context_fingerprint=key.context_fingerprint,
            has_tools=key.has_tools,
            reuse_allowed=reuse_allowed(request),
            client_max_tokens=request.client_max_tokens,
            client_n=request.n,
        )
        return self.c.policy.decide(facts, recollection.neighbours)

    # -- reuse -------------------------------------------------------------------------------

    def _reuse(self, request: ChatRequest, account: Accounting) -> JSONResponse | StreamingResponse:
        source = account.decision.reuse_source
        assert source is not None
        if self.c.memory is not None:
            self.c.spawn(_in_thread(self.c.memory.record_hit, source.tenant, source.id))
        completion_id = "chatcmpl-" + uuid.uuid4().hex
        account.response_id = completion_id
        created = int(time.time())
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        account.usage = usage
        self._account(account)
        headers = account.headers()
        if request.stream:
            chunks = completion_chunks(
                completion_id,
                request.model,
                created,
                source.answer,
                "stop",
                usage if request.include_usage else None,
            )
            return StreamingResponse(_iterate(chunks), media_type="text/event-stream", headers=headers)
        payload = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": request.model,
            "system_fingerprint": "speedup-reuse",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": source.answer},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        return JSONResponse(payload, headers=headers)

    # -- non-streaming -----------------------------------------------------------------------

    async def _complete(
        self,
        request: ChatRequest,
        body: dict[str, Any],
        key: MemoryKey | None,
        recollection: Recollection,
        account: Accounting,
    ) -> JSONResponse:
        decision = account.decision
        send = body
        if decision.tier == "guided":
            send = inject_exemplars(body, decision.exemplars)
        try:
            payload = await self._call(with_budget(send, decision.max_tokens), decision.n, account)
            if decision.tier == "guided" and self._cut_off(payload) and self._can_escalate(request, decision):
                account.escalated = True
                self.c.metrics.escalations.labels(account.tenant).inc()
                payload = await self._call(send, decision.n, account)
        except ProxyError as error:
            self.c.metrics.backend_errors.labels(error.code or str(error.status)).inc()
            raise
        payload["usage"] = dict(account.usage)
        account.response_id = payload.get("id")
        self._account(account)
        if key is not None and recollection.vector is not None:
            await self._until_durable(self._remember(key, recollection, payload, account))
        return JSONResponse(payload, headers=account.headers())

    async def _call(self, body: dict[str, Any], n: int, account: Accounting) -> dict[str, Any]:
        backend = self.c.backend
        if n > 1 and backend.supports_n is False:
            payload, seconds = await complete_fanout(backend, body, n)
        else:
            send = {**body, "n": n} if (n > 1 or "n" in body) else body
            try:
                payload, seconds = await backend.complete(send)
            except ProxyError as error:
                if n > 1 and backend.supports_n is None and error.status == 400:
                    backend.supports_n = False
                    return await self._call(body, n, account)
                raise
            if n > 1:
                backend.supports_n = True
        account.backend_seconds += seconds
        account.last_usage = payload.get("usage") or {}
        add_usage(account.usage, account.last_usage)
        return payload

    @staticmethod
    def _cut_off(payload: dict[str, Any]) -> bool:
        return any(choice.get("finish_reason") == "length" for choice in payload.get("choices", []))

    @staticmethod
    def _can_escalate(request: ChatRequest, decision: Decision) -> bool:
        limit = request.client_max_tokens
        return decision.max_tokens is not None and (limit is None or decision.max_tokens < limit)

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
        send = inject_exemplars(body, decision.exemplars) if decision.tier == "guided" else body
        upstream = {
            **send,
            "stream": True,
            "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
        }
        try:
            if decision.n > 1 and self.c.backend.supports_n is False:
                chunks = stream_fanout(self.c.backend, upstream, decision.n)
                first = await anext(chunks)
                source = _prepend(first, chunks)
            else:
                if decision.n > 1 or "n" in upstream:
                    upstream["n"] = decision.n
                stream = await self.c.backend.open_stream(upstream)
                source = _decode(stream)
        except ProxyError as error:
            self.c.metrics.backend_errors.labels(error.code or str(error.status)).inc()
            raise
        return StreamingResponse(
            self._relay(request, source, key, recollection, account),
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
    ) -> AsyncIterator[bytes]:
        backend_started = time.perf_counter()
        text: list[str] = []
        finish: str | None = None
        completion_id = None
        failed = False
        remembered = False
        timed = False
        template: dict[str, Any] = {"object": "chat.completion.chunk"}
        try:
            async for chunk in source:
                completion_id = completion_id or chunk.get("id")
                usage = chunk.pop("usage", None)
                if usage:
                    add_usage(account.usage, usage)
                for choice in chunk.get("choices", []):
                    if choice.get("index", 0) == 0:
                        text.append((choice.get("delta") or {}).get("content") or "")
                        finish = choice.get("finish_reason") or finish
                if chunk.get("choices"):
                    template = chunk
                    yield event(chunk)
            account.response_id = completion_id
            account.backend_seconds += time.perf_counter() - backend_started
            timed = True
            if key is not None and recollection.vector is not None:
                choice = {"finish_reason": finish, "message": {"content": "".join(text)}}
                remembered = True
                await self._until_durable(
                    self._remember(key, recollection, {"id": completion_id, "choices": [choice]}, account)
                )
            if request.include_usage:
                yield event({**template, "choices": [], "usage": dict(account.usage)})
            yield DONE
        except ProxyError as error:
            failed = True
            self.c.metrics.backend_errors.labels(error.code or str(error.status)).inc()
            yield event(error.envelope())
        finally:
            await source.aclose()  # type: ignore[attr-defined]
            account.response_id = completion_id
            if not timed:
                account.backend_seconds += time.perf_counter() - backend_started
            self._account(account)
            if not failed and not remembered and key is not None and recollection.vector is not None:
                # The client went away before the end: keep what finished, in the background.
                choice = {"finish_reason": finish, "message": {"content": "".join(text)}}
                self._remember(key, recollection, {"id": completion_id, "choices": [choice]}, account)

    # -- accounting and memory ---------------------------------------------------------------

    def _account(self, account: Accounting) -> None:
        m = self.c.metrics
        tier = account.decision.tier
        m.requests.labels(account.tenant, tier).inc()
        m.prompt_tokens.labels(account.tenant).inc(account.usage.get("prompt_tokens", 0))
        m.completion_tokens.labels(account.tenant).inc(account.usage.get("completion_tokens", 0))
        m.saved_tokens.labels(account.tenant, tier).inc(account.saved_tokens)
        m.saved_seconds.labels(account.tenant, tier).inc(account.saved_seconds)
        account.total_seconds = time.perf_counter() - account.started
        m.request_latency.labels(tier).observe(account.total_seconds)
        m.proxy_latency.labels(tier).observe(max(0.0, account.total_seconds - account.backend_seconds))
        for observer in self.c.observers:
            try:
                observer.request_finished(account)
            except Exception as error:  # noqa: BLE001 - accounting must never fail a request
                log.warning("request observer failed: %s", error)

    def _remember(
        self, key: MemoryKey, recollection: Recollection, payload: dict[str, Any], account: Accounting
    ) -> asyncio.Task[Any] | None:
        """Start writing the episode; the returned task is the durable write, learning follows it."""
        choices = payload.get("choices") or []
        if not choices:
            return None
        reason = skip_reason(choices[0])
        if reason is not None:
            self.c.metrics.episodes_skipped.labels(reason).inc()
            return None
        samples = max(1, len(choices))
        last = account.last_usage or account.usage
        completion = int(last.get("completion_tokens") or 0) // samples
        prompt = int(last.get("prompt_tokens") or 0) // samples
        usage = Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
        cold = account.decision.tier == "cold"
        assert self.c.memory is not None and recollection.vector is not None
        stored = self.c.spawn(
            remember(
                self.c.memory,
                self.c.metrics,
                key,
                recollection.vector,
                answer=choices[0]["message"]["content"],
                usage=usage,
                baseline_tokens=completion if cold else account.decision.estimated_cold_tokens,
                baseline_seconds=account.backend_seconds if cold else account.decision.estimated_cold_seconds,
                source_tier=account.decision.tier,
                response_id=str(payload.get("id") or ""),
            )
        )
        if self.c.learning is not None:  # verify, apply early ratings, write lessons: all in the background
            self.c.spawn(self.c.learning.after_remember(stored, recollection.vector, account))
        # An embedding still running past the memory deadline must not hold the answer back.
        return stored if recollection.vector.done() else None

    @staticmethod
    async def _until_durable(stored: asyncio.Task[Any] | None) -> None:
        """Answer only once the episode is written (or spooled), so a crash right after the
        response loses nothing; bounded, because memory must never hold up an answer for long."""
        if stored is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(stored), WRITE_BEFORE_ANSWER_S)


async def _in_thread(function: Any, *args: Any) -> None:
    await asyncio.to_thread(function, *args)


async def _iterate(chunks: Any) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _decode(stream: Any) -> AsyncIterator[dict[str, Any]]:
    try:
        async for data in stream.events():
            if data == "[DONE]":
                break
            try:
                yield json.loads(data)
            except ValueError as error:
                raise ProxyError(502, "backend sent a malformed stream event") from error
    finally:
        await stream.aclose()


async def _prepend(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
