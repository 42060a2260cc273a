"""The error budget on live traffic: reuses checked against a fresh answer, and the scope that fails it."""

# ruff: noqa: F811 - test functions take the imported `redis_server` fixture as a parameter

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request

from budget.reuse.audit import FalseReuseEstimate, wilson
from tests.conftest import ProxyFactory, RunningProxy, ServerThread, stub_url
from tests.redis_fixtures import RedisProcess, redis_server  # noqa: F401 - fixture

FIRST = "Reset it from the sign-in page."
LATER = ("Our warehouse in Leeds ships parcels on weekdays.", "The museum cafe serves soup until noon.")


def fickle_backend() -> ServerThread:
    """The first answer, then only unrelated ones: a fresh answer never agrees with the first."""
    app = FastAPI()
    turn = itertools.count()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        number = next(turn)
        text = FIRST if number == 0 else LATER[number % 2]
        message = {"role": "assistant", "content": text}
        return {
            "id": f"chatcmpl-f{time.monotonic_ns()}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model"),
            "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }

    return ServerThread(app).start()


def tier(proxy: RunningProxy, question: str) -> str:
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": question}], temperature=0
    )
    return raw.headers["x-speedup-tier"]


def metric(proxy: RunningProxy, name: str) -> float:
    text = proxy.container.metrics.render().decode()
    return sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M))


def test_a_scope_whose_reuses_disagree_with_fresh_answers_loses_folded_reuse(start_proxy: ProxyFactory) -> None:
    backend = fickle_backend()
    try:
        proxy = start_proxy(stub_url(backend), policy={"audit_rate": 1.0, "max_false_reuse": 0.01})
        assert tier(proxy, "How do I reset my password?") == "cold"
        proxy.settle()
        variants = ["how do I reset my password please", "Quick question: how do I reset my password?",
                    "hi, how do i reset my password? thanks"]  # fmt: skip
        served = []
        for variant in variants:
            served.append(tier(proxy, variant))
            proxy.settle()  # the audit of a reuse runs in the background
        # The first folded reuse was audited and disagreed: one wrong of one puts the rate's lower
        # bound (20.6%) above the 1% budget, so the scope serves no more folded matches.
        assert served[0] == "reuse" and "reuse" not in served[1:]
        assert metric(proxy, "speedup_reuse_audits_total") == 1
        # Identical text stays reusable, and is not audited: it cannot be a look-alike's answer.
        assert tier(proxy, "How do I reset my password?") == "reuse"
        proxy.settle()
        totals = httpx.get(proxy.url + "/v1/speedup/stats").json()["totals"]
        audit = totals["reuse_audit"]
        assert audit["agreements"] == 0 and audit["disagreements"] == 1
        assert audit["false_reuse_rate"] == 1.0 and audit["upper_bound"] == 1.0
        assert totals["reflection_tokens"] == 16  # an audit's tokens count against the savings
        assert metric(proxy, "speedup_false_reuse_rate") == 1.0
    finally:
        backend.stop()


def test_reuses_that_agree_with_fresh_answers_keep_being_served(
    start_proxy: ProxyFactory, stub_backend: ServerThread
) -> None:
    proxy = start_proxy(stub_url(stub_backend), policy={"audit_rate": 1.0})
    tier(proxy, "Where can I download my invoice?")
    proxy.settle()
    served = [tier(proxy, "where can i download my invoice, please?") for _ in range(5)]
    proxy.settle()
    assert served == ["reuse"] * 5
    audit = httpx.get(proxy.url + "/v1/speedup/stats").json()["totals"]["reuse_audit"]
    assert audit["agreements"] == 5 and audit["disagreements"] == 0 and audit["upper_bound"] < 0.5


def test_the_budget_closes_a_scope_only_when_its_rate_is_above_the_budget_with_confidence() -> None:
    estimate = FalseReuseEstimate(max_false_reuse=0.01)
    for _ in range(300):
        estimate.record("t", "s", agreed=True)
    estimate.record("t", "s", agreed=False)
    assert estimate.folded_reuse_allowed("t", "s")  # 1 in 301: within the budget
    for _ in range(15):
        estimate.record("t", "s", agreed=False)
    assert wilson(16, 316)[0] > 0.01
    assert not estimate.folded_reuse_allowed("t", "s") and estimate.folded_reuse_allowed("t", "other")


def test_a_scope_one_replica_found_over_budget_loses_folded_reuse_on_every_replica(
    redis_server: RedisProcess, start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    backend = fickle_backend()
    try:
        shared = {"memory": redis_server.url}
        a = start_proxy(stub_url(backend), data_dir=tmp_path / "a", redis={"replica_id": "a"},
                        policy={"audit_rate": 1.0}, **shared)  # fmt: skip
        # B never audits: only A's audits, through the shared counts, can close the scope on B.
        b = start_proxy(stub_url(backend), data_dir=tmp_path / "b", redis={"replica_id": "b"},
                        policy={"audit_rate": 0.0, "audit_sync_interval_s": 0.1}, **shared)  # fmt: skip
        assert tier(a, "How do I reset my password?") == "cold"
        a.settle()
        deadline = time.monotonic() + 5
        while tier(b, "how do I reset my password please") != "reuse":  # B holds A's episode
            assert time.monotonic() < deadline, "the episode never reached B"
            time.sleep(0.05)
        assert tier(a, "Quick question: how do I reset my password?") == "reuse"
        a.settle()  # A's audit disagreed: the scope is over budget
        assert metric(b, "speedup_false_reuse_rate") == 1.0  # B reports the shared estimate
        served = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and (not served or served[-1] == "reuse"):
            served.append(tier(b, "hi, how do i reset my password? thanks"))
            time.sleep(0.1)
        assert served[-1] != "reuse", "B kept serving folded matches in a scope over budget"
        assert tier(b, "How do I reset my password?") == "reuse"  # identical text stays reusable
    finally:
        backend.stop()


def test_the_shared_counts_add_up_across_replicas(redis_server: RedisProcess) -> None:
    from memory_store.redis.audit_ledger import RedisAuditLedger

    first = FalseReuseEstimate(0.01, RedisAuditLedger.from_url(redis_server.url, "t1"))
    second = FalseReuseEstimate(0.01, RedisAuditLedger.from_url(redis_server.url, "t1"))
    first.record("acme", "s", agreed=True)
    second.record("acme", "s", agreed=False)
    second.record("acme", "other", agreed=True)
    first.sync()
    totals = first.by_tenant()["acme"]
    assert (totals.agreements, totals.disagreements) == (2, 1)
    assert first.ledger.scopes()[("acme", "s")].trials == 2
    assert not first.folded_reuse_allowed("acme", "s") and first.folded_reuse_allowed("acme", "other")
