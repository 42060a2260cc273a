"""The error budget on live traffic: reuses checked against a fresh answer, and the scope that fails it."""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

import httpx
from fastapi import FastAPI, Request

from budget.reuse.audit import FalseReuseEstimate, wilson
from tests.conftest import ProxyFactory, RunningProxy, ServerThread, stub_url

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
