"""The reuse verifier: the unsure band settled by a served model, and what it is never asked."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from budget.reuse.equivalence import hard_difference, p_same
from budget.reuse.judge import Asked, Candidate, judge
from tests.conftest import ProxyFactory, RunningProxy, ServerThread, free_port, stub_url


def yes_man() -> tuple[ServerThread, list[dict[str, Any]]]:
    """A verifier that says Same to everything, and remembers what it was asked."""
    app = FastAPI()
    asked: list[dict[str, Any]] = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        asked.append(await request.json())
        top = [{"token": "Same", "logprob": 0.0}, {"token": "Different", "logprob": -20.0}]
        return {
            "id": "chatcmpl-yes",
            "object": "chat.completion",
            "created": 0,
            "model": "v",
            "usage": {"prompt_tokens": 300, "completion_tokens": 1, "total_tokens": 301},
            "choices": [{
                "index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "Same"},
                "logprobs": {"content": [{"token": "Same", "logprob": 0.0, "top_logprobs": top}]},
            }],  # fmt: skip
        }

    return ServerThread(app).start(), asked


def ask(proxy: RunningProxy, question: str) -> httpx.Headers:
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": question}], temperature=0
    )
    return raw.headers


def metric(proxy: RunningProxy, name: str, outcome: str) -> float:
    text = proxy.container.metrics.render().decode()
    return sum(float(v) for v in re.findall(rf'^{name}\{{[^}}]*outcome="{outcome}"[^}}]*\}} (\S+)$', text, re.M))


def verifying(start_proxy: ProxyFactory, backend_url: str, url: str, **policy: Any) -> RunningProxy:
    return start_proxy(backend_url, reuse_verifier={"enabled": True, "url": url}, policy=policy)


def test_a_paraphrase_the_folds_refuse_is_reused_once_the_verifier_says_same(
    start_proxy: ProxyFactory, llama_url: str, verifier_url: str
) -> None:
    proxy = verifying(start_proxy, llama_url, verifier_url)
    assert ask(proxy, "Can I pay my bill with a credit card?")["x-speedup-tier"] == "cold"
    proxy.settle()
    headers = ask(proxy, "Can I pay my bill using a credit card?")
    assert headers["x-speedup-tier"] == "reuse", headers.get("x-speedup-reuse-verified")
    outcome, p = headers["x-speedup-reuse-verified"].split(";p=")
    assert outcome == "same" and float(p) >= 0.97
    proxy.settle()
    totals = httpx.get(proxy.url + "/v1/speedup/stats").json()["totals"]
    checks = totals["reuse_verification"]
    assert checks["checks"] == 1 and checks["same"] == 1 and checks["tokens"] > 100
    assert totals["reflection_tokens"] >= checks["tokens"]  # counted against the savings
    assert metric(proxy, "speedup_reuse_verifications_total", "same") == 1


def test_an_antonym_the_verifier_is_asked_about_is_never_reused(
    start_proxy: ProxyFactory, stub_backend: ServerThread, verifier_url: str
) -> None:
    proxy = verifying(start_proxy, stub_url(stub_backend), verifier_url)
    for stored, asked in (
        ("How do I add a user to my team workspace?", "How do I remove a user from my team workspace?"),
        ("How do I enable autopay on my account?", "How do I disable autopay on my account?"),
        ("Is breakfast included in the room rate?", "Is breakfast excluded from the room rate?"),
    ):
        ask(proxy, stored)
        proxy.settle()
        headers = ask(proxy, asked)
        assert headers["x-speedup-tier"] != "reuse"
        assert headers["x-speedup-reuse-verified"].startswith("different;")  # it was asked, and said no
    assert metric(proxy, "speedup_reuse_verifications_total", "different") == 3


@pytest.mark.parametrize(
    ("stored", "asked", "why"),
    [
        ("How do I cancel my subscription?", "How do I cancel my son's subscription?", "owner"),
        ("If the airline cancels my trip, is there a refund?", "If I cancel my trip, is there a refund?", "owner"),
        ("Can I get a refund within 30 days?", "Can I get a refund within 60 days?", "number"),
        ("Is the pool open to guests?", "Is the pool not open to guests?", "negation"),
        ("Leo is 12 cm shorter than Grace. How tall is Leo?", "Leo is 12 cm taller than Grace. How tall is Leo?",
         "comparison"),
        ("Can I move money from savings to checking?", "Can I move money from checking to savings?", "order"),
    ],
)  # fmt: skip
def test_a_hard_difference_is_never_put_to_the_verifier(
    start_proxy: ProxyFactory, stub_backend: ServerThread, stored: str, asked: str, why: str
) -> None:
    assert hard_difference(stored, asked) == why
    verifier, calls = yes_man()
    try:
        proxy = verifying(start_proxy, stub_url(stub_backend), stub_url(verifier))
        ask(proxy, stored)
        proxy.settle()
        headers = ask(proxy, asked)
        # A verifier that says Same to everything still cannot serve another owner's, number's, ... answer.
        assert headers["x-speedup-tier"] != "reuse" and "x-speedup-reuse-verified" not in headers
        assert calls == []
    finally:
        verifier.stop()


def test_a_verifier_that_cannot_be_reached_serves_nothing(
    start_proxy: ProxyFactory, stub_backend: ServerThread
) -> None:
    proxy = verifying(start_proxy, stub_url(stub_backend), f"http://127.0.0.1:{free_port()}/v1")
    ask(proxy, "Can I pay my bill with a credit card?")
    proxy.settle()
    headers = ask(proxy, "Can I pay my bill using a credit card?")
    assert headers["x-speedup-tier"] != "reuse" and headers["x-speedup-reuse-verified"].startswith("error;")
    assert metric(proxy, "speedup_reuse_verifications_total", "error") == 1


def test_without_a_verifier_the_unsure_band_is_refused_and_nobody_is_asked(
    start_proxy: ProxyFactory, stub_backend: ServerThread
) -> None:
    proxy = start_proxy(stub_url(stub_backend))
    ask(proxy, "Can I pay my bill with a credit card?")
    proxy.settle()
    headers = ask(proxy, "Can I pay my bill using a credit card?")
    assert headers["x-speedup-tier"] != "reuse" and "x-speedup-reuse-verified" not in headers


def test_a_scope_over_its_error_budget_asks_no_verifier() -> None:
    candidate = Candidate("Can I pay my bill with a credit card?", (), "", similarity=0.95)
    asked = Asked("Can I pay my bill using a credit card?", (), "", has_tools=False)
    assert judge(candidate, asked, 0.55, folded_allowed=True, verify_similarity=0.6).verifiable
    over = judge(candidate, asked, 0.55, folded_allowed=False, verify_similarity=0.6)
    assert not over.reuse and not over.verifiable and over.reason == "over_error_budget"
    below = judge(candidate.__class__(candidate.question, (), "", 0.59), asked, 0.55, True, 0.6)
    assert not below.verifiable  # under the band's floor


def test_p_same_reads_only_same_and_different_among_the_first_tokens_alternatives() -> None:
    top = [{"token": "Same", "logprob": -0.1}, {"token": "Different", "logprob": -2.4}, {"token": "Yes", "logprob": -1}]
    assert p_same(top) == pytest.approx(0.9089, abs=1e-3)
    assert p_same([{"token": "Yes", "logprob": 0.0}]) == 0.0  # neither word: unsure, refused
