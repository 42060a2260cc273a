"""Adaptive compute on the real backend: votes stop early where the samples agree and not where they
do not, return the majority, never draw more than the client allowed, draw fewer on familiar
questions and none on reused ones, stream, and report every backend call's tokens; refine stops at
the first passing check or at the first revision that keeps its answer.

A relay between the proxy and llama.cpp records every backend call, so the tests count calls and
tokens themselves instead of trusting the proxy's headers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx
import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from budget.compute.answers import AnswerFormat, answer_key, same_answer
from proxy.serving.refine import REVISE_PROMPT
from tests.conftest import ProxyFactory, RunningProxy, ServerThread, stub_url
from tests.fault_backend import completion

pytestmark = pytest.mark.timeout(900)

FORMAT = "End with the line 'Answer: ' followed by the number."
EASY = f"Tom has 3 apples and buys 4 more. How many apples does he have? {FORMAT}"
EASY_OTHER_NUMBERS = f"Tom has 6 apples and buys 2 more. How many apples does he have? {FORMAT}"
CONTESTED = "Pick a random whole number between 1 and 1000. Reply with only 'Answer: <number>'."


@dataclass
class Relay:
    """Forwards to the real backend and writes down each call's completion tokens."""

    target: str
    calls: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            async with httpx.AsyncClient(timeout=600) as client:
                reply = await client.post(self.target.rstrip("/") + "/chat/completions", json=body)
            payload = reply.json()
            choices = len(payload.get("choices") or []) if reply.status_code == 200 else 0
            self.calls.append({"body": body, "usage": payload.get("usage") or {}, "choices": choices, "reply": payload})
            return JSONResponse(payload, status_code=reply.status_code)

        return app

    @property
    def samples(self) -> int:
        return sum(call["choices"] for call in self.calls)

    @property
    def completion_tokens(self) -> int:
        return sum(int(call["usage"].get("completion_tokens") or 0) for call in self.calls)


def relayed(target: str) -> Iterator[Relay]:
    recorder = Relay(target)
    server = ServerThread(recorder.app()).start()
    recorder.url = f"http://127.0.0.1:{server.port}/v1"  # type: ignore[attr-defined]
    yield recorder
    server.stop()


@pytest.fixture
def relay(llama_url: str) -> Iterator[Relay]:
    yield from relayed(llama_url)


def chat(proxy: RunningProxy, question: str = EASY, temperature: float = 0.7, **options: Any) -> Any:
    return proxy.client().chat.completions.with_raw_response.create(
        model="qwen",
        messages=[{"role": "user", "content": question}],
        temperature=temperature,
        max_tokens=96,
        **options,
    )


def vote(proxy: RunningProxy, question: str, max_samples: int, temperature: float = 0.7) -> Any:
    return chat(proxy, question, temperature, extra_body={"speedup": {"samples": {"max": max_samples, "mode": "vote"}}})


def drawn(raw: Any) -> tuple[int, int]:
    used, allowed = raw.headers["x-speedup-samples"].split("/")
    return int(used), int(allowed)


def voted_for(text: str) -> str:
    """What an answer votes for, as the x-speedup-votes header names it (free text: a text:... key)."""
    return answer_key(text, AnswerFormat()) or "text:"


def winner(raw: Any) -> str:
    key = tally(raw).most_common(1)[0][0]
    return "text:" if key.startswith("text:") else key


def tally(raw: Any) -> Counter[str]:
    pairs = (item.rsplit("=", 1) for item in raw.headers["x-speedup-votes"].split(","))
    return Counter({unquote(key): int(count) for key, count in pairs})


def test_an_easy_question_stops_early_with_the_majority(start_proxy: ProxyFactory, relay: Any) -> None:
    proxy = start_proxy(relay.url, memory="off")
    raw = vote(proxy, EASY, 8)
    completion = raw.parse()
    used, allowed = drawn(raw)
    assert allowed == 8 and used < 8, raw.headers  # stopped early
    # One call per sample, so any backend serves it and each sample's usage is exact (llama.cpp
    # reports one choice's tokens for n>1).
    assert relay.samples == len(relay.calls) == used
    assert all(call["body"].get("n") == 1 for call in relay.calls)
    votes = tally(raw)
    assert sum(votes.values()) <= used
    count = votes.most_common(1)[0][1]
    assert voted_for(completion.choices[0].message.content) == winner(raw)  # the majority is returned
    assert float(raw.headers["x-speedup-agreement"]) == pytest.approx(count / used, abs=0.01)
    assert completion.usage.completion_tokens == relay.completion_tokens  # every sample's tokens
    registry = proxy.container.metrics.registry
    labels = {"tenant": "local", "method": "vote"}
    assert registry.get_sample_value("speedup_compute_units_total", labels | {"kind": "used"}) == used
    assert registry.get_sample_value("speedup_compute_units_total", labels | {"kind": "skipped"}) == 8 - used
    assert int(raw.headers["x-speedup-saved-tokens"]) > 0  # against all 8 samples, the fixed method


def test_a_contested_question_does_not_stop_early_and_never_exceeds_the_maximum(
    start_proxy: ProxyFactory, relay: Any
) -> None:
    proxy = start_proxy(relay.url, memory="off")
    raw = vote(proxy, CONTESTED, 5, temperature=1.3)
    used, allowed = drawn(raw)
    votes = tally(raw)
    # Random numbers rarely repeat: the rule keeps drawing, up to the client's maximum and no further.
    assert (used, allowed) == (5, 5), (raw.headers, votes)
    assert relay.samples == 5
    assert float(raw.headers["x-speedup-vote-confidence"]) < 0.9
    assert raw.parse().usage.completion_tokens == relay.completion_tokens


def test_a_familiar_question_draws_fewer_samples_and_a_reused_one_none(start_proxy: ProxyFactory, relay: Any) -> None:
    # Bars far enough apart that a cold vote starts with 3 samples and a familiar one with 2: what is
    # guarded is that memory lowers the bar (the defaults differ less, docs/ADAPTIVE_COMPUTE.md).
    proxy = start_proxy(relay.url, compute={"cold_confidence": 0.9, "familiar_confidence": 0.85})
    cold = vote(proxy, EASY, 8)
    assert cold.headers["x-speedup-tier"] == "cold"
    proxy.settle()
    before = relay.samples
    familiar = vote(proxy, EASY_OTHER_NUMBERS, 8)
    assert familiar.headers["x-speedup-tier"] == "guided", familiar.headers
    assert drawn(familiar)[0] < drawn(cold)[0], (familiar.headers, cold.headers)
    assert relay.samples - before == drawn(familiar)[0]
    proxy.settle()
    before = relay.samples
    again = vote(proxy, EASY, 8)
    assert again.headers["x-speedup-tier"] == "reuse"
    assert drawn(again) == (0, 8) and relay.samples == before
    assert again.parse().choices[0].message.content == cold.parse().choices[0].message.content


def test_a_confident_first_sample_ends_the_vote_alone_and_its_logprobs_stay_the_proxys(
    start_proxy: ProxyFactory, relay: Any
) -> None:
    proxy = start_proxy(relay.url, memory="off", compute={"confident_sample_logprob": -5.0})  # any answer is sure
    raw = vote(proxy, EASY, 8)
    assert drawn(raw) == (1, 8) and relay.samples == 1, raw.headers
    assert raw.headers["x-speedup-vote-stop"] == "confident_sample"
    assert relay.calls[0]["body"]["logprobs"] is True  # the proxy asked, to read the sample's confidence
    assert raw.parse().choices[0].logprobs is None  # the client did not
    asked = chat(proxy, logprobs=True, extra_body={"speedup": {"samples": {"max": 8}}})
    assert drawn(asked)[0] == 1 and asked.parse().choices[0].logprobs.content


def test_without_the_gate_one_sample_never_ends_a_vote(start_proxy: ProxyFactory, relay: Any) -> None:
    proxy = start_proxy(relay.url, memory="off")
    raw = vote(proxy, EASY, 8)
    assert drawn(raw)[0] >= 2 and "logprobs" not in relay.calls[0]["body"]
    assert raw.headers["x-speedup-vote-stop"] in ("agreement", "max_samples")


def test_a_streamed_vote_streams_the_chosen_answer_with_every_samples_tokens(
    start_proxy: ProxyFactory, relay: Any
) -> None:
    proxy = start_proxy(relay.url, memory="off")
    raw = chat(
        proxy, stream=True, stream_options={"include_usage": True}, extra_body={"speedup": {"samples": {"max": 6}}}
    )
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    used, _ = drawn(raw)
    assert used == relay.samples and used <= 6
    assert all(call["body"].get("stream") is not True for call in relay.calls)  # samples are drawn whole
    assert voted_for(text) == winner(raw)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == relay.completion_tokens


def test_the_header_twin_asks_for_a_vote(start_proxy: ProxyFactory, relay: Any) -> None:
    proxy = start_proxy(relay.url, memory="off")
    raw = chat(proxy, extra_headers={"X-Speedup-Samples": "vote:4"})
    assert drawn(raw)[1] == 4 and drawn(raw)[0] == relay.samples


def refine(proxy: RunningProxy, rounds: int) -> Any:
    return chat(proxy, temperature=0, extra_body={"speedup": {"refine": {"max_rounds": rounds}}})


def test_refine_stops_at_the_first_passing_check(start_proxy: ProxyFactory, relay: Any) -> None:
    always = {"verifier": {"kind": "regex", "pattern": "."}}
    proxy = start_proxy(relay.url, memory="off", memory_modes=always)
    raw = refine(proxy, 3)
    assert raw.headers["x-speedup-rounds"] == "1/3"
    assert len(relay.calls) == 1  # a regex check costs no call; the draft passed, nothing revised


def test_the_judge_check_is_a_short_yes_or_no_call(start_proxy: ProxyFactory, relay: Any) -> None:
    proxy = start_proxy(relay.url, memory="off", compute={"refine_check": "judge"})
    raw = refine(proxy, 2)
    rounds = int(raw.headers["x-speedup-rounds"].split("/")[0])
    assert len(relay.calls) == rounds + 1
    assert relay.calls[1]["body"]["max_tokens"] <= 16
    assert raw.parse().usage.completion_tokens == relay.completion_tokens


def test_refine_revises_after_a_failed_check_and_stops_once_a_revision_keeps_its_answer(
    start_proxy: ProxyFactory, relay: Any
) -> None:
    never = {"verifier": {"kind": "regex", "pattern": "(?!x)x"}}
    proxy = start_proxy(relay.url, memory="off", memory_modes=never)
    raw = refine(proxy, 3)
    rounds = int(raw.headers["x-speedup-rounds"].split("/")[0])
    assert len(relay.calls) == rounds >= 2  # a regex check costs no call; round 1 always fails it
    texts = [_text(relay, index) for index in range(rounds)]
    for index in range(1, rounds):
        revision = relay.calls[index]["body"]["messages"]
        assert [m["role"] for m in revision] == ["user", *["assistant", "user"] * index]
        assert revision[-1]["content"] == REVISE_PROMPT  # asked as the fixed method asks, no other answer
        if index < rounds - 1:
            assert same_answer(texts[index - 1], texts[index]) is not True  # a changed answer is revised again
    kept = same_answer(texts[-2], texts[-1]) is True
    assert raw.headers["x-speedup-refine-stop"] == ("converged" if kept else "max_rounds")
    assert rounds == 3 or kept
    assert raw.parse().usage.completion_tokens == relay.completion_tokens


@dataclass
class ScriptedModel:
    """A backend that answers each call with the next of `answers`: the real model cannot be made to
    keep or change its answer on cue."""

    answers: list[str]
    calls: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            self.calls.append(await request.json())
            content = self.answers[min(len(self.calls), len(self.answers)) - 1]
            return JSONResponse(
                completion(
                    choices=[
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ]
                )
            )

        return app


@pytest.mark.parametrize(
    ("answers", "rounds", "stop"),
    [
        (["Answer: 5", "So it is 6.\nAnswer: 6", "Answer: 7"], "3/3", "max_rounds"),
        (["Answer: 5", "Checked again: 2 + 3 = 5.\nAnswer: 5", "Answer: 7"], "2/3", "converged"),
        (["Paris is the capital.", "paris is the capital", "Lyon."], "2/3", "converged"),
        (["Paris is the capital.", "It is Lyon.", "It is Marseille."], "3/3", "max_rounds"),
    ],
)
def test_refine_runs_every_round_while_revisions_change_the_answer_and_stops_when_one_keeps_it(
    start_proxy: ProxyFactory, answers: list[str], rounds: str, stop: str
) -> None:
    model = ScriptedModel(answers)
    server = ServerThread(model.app()).start()
    try:
        never = {"verifier": {"kind": "regex", "pattern": "(?!x)x"}}
        proxy = start_proxy(stub_url(server), memory="off", memory_modes=never)
        raw = refine(proxy, 3)
    finally:
        server.stop()
    assert (raw.headers["x-speedup-rounds"], raw.headers["x-speedup-refine-stop"]) == (rounds, stop)
    assert len(model.calls) == int(rounds[0])
    assert raw.parse().choices[0].message.content == answers[int(rounds[0]) - 1]  # the last round is the answer
    registry = proxy.container.metrics.registry
    assert registry.get_sample_value("speedup_refine_stops_total", {"tenant": "local", "reason": stop}) == 1


def test_refine_checks_by_a_second_solve_and_counts_it(start_proxy: ProxyFactory, relay: Any) -> None:
    proxy = start_proxy(relay.url, memory="off")
    raw = refine(proxy, 2)
    rounds = int(raw.headers["x-speedup-rounds"].split("/")[0])
    # Round 1 is checked by an independent solve of the task as asked; a disagreement buys round 2,
    # which is not checked (no round is left to revise in).
    assert len(relay.calls) == rounds + 1
    check = relay.calls[1]["body"]
    assert check["messages"] == relay.calls[0]["body"]["messages"] and check["temperature"] > 0
    assert raw.parse().usage.completion_tokens == relay.completion_tokens


@pytest.fixture
def checker(verifier_url: str) -> Iterator[Relay]:
    """A relay in front of the real verifier model (the bundled 1.5B)."""
    yield from relayed(verifier_url)


def test_refine_checks_by_the_verifier_models_solve_and_counts_its_tokens(
    start_proxy: ProxyFactory, relay: Any, checker: Any
) -> None:
    options = {"compute": {"refine_check": "verifier_model"}, "reuse_verifier": {"url": checker.url}}
    proxy = start_proxy(relay.url, memory="off", **options)
    raw = refine(proxy, 3)
    rounds = int(raw.headers["x-speedup-rounds"].split("/")[0])
    stop = raw.headers["x-speedup-refine-stop"]
    # Checked: every draft but one that kept the answer it was asked to reconsider, and the last.
    assert len(relay.calls) == rounds and len(checker.calls) == (rounds if stop == "passed" else rounds - 1)
    task = relay.calls[0]["body"]["messages"]
    for call in checker.calls:  # the task as asked, deterministic, under the verifier model's name
        assert call["body"]["messages"] == task and call["body"]["temperature"] == 0
        assert call["body"]["model"] == "reuse-verifier"
    drafted, solved = answer_key(_text(relay, 0), AnswerFormat()), answer_key(_text(checker, 0), AnswerFormat())
    cut_off = checker.calls[0]["reply"]["choices"][0]["finish_reason"] != "stop"
    if rounds == 1:  # agreed, or the solve was cut off (no evidence against the draft)
        assert stop == "passed" and (cut_off or (solved is not None and solved == drafted))
    else:  # disagreed: revised, asked as the fixed method asks (the 1.5B's answer is not passed on)
        assert not cut_off and solved != drafted
        assert relay.calls[1]["body"]["messages"][-1]["content"] == REVISE_PROMPT
    assert raw.parse().usage.completion_tokens == relay.completion_tokens + checker.completion_tokens


def _text(recorder: Any, index: int) -> str:
    return recorder.calls[index]["reply"]["choices"][0]["message"]["content"] or ""


def test_samples_are_refused_for_a_tenant_not_enabled(start_proxy: ProxyFactory, relay: Any) -> None:
    keys = {"api_keys": {"key-a": "acme", "key-b": "globex"}, "compute": {"tenants": ["acme"]}}
    proxy = start_proxy(relay.url, memory="off", **keys)
    body = {"speedup": {"samples": {"max": 3}}}
    with pytest.raises(openai.PermissionDeniedError) as refused:
        proxy.client("key-b").chat.completions.create(
            model="qwen", messages=[{"role": "user", "content": EASY}], extra_body=body
        )
    assert refused.value.code == "option_not_allowed"
    assert relay.calls == []
    allowed = proxy.client("key-a").chat.completions.with_raw_response.create(
        model="qwen", messages=[{"role": "user", "content": EASY}], max_tokens=64, extra_body=body
    )
    assert drawn(allowed)[1] == 3


def test_n_choices_from_llamacpp_count_every_choices_tokens(start_proxy: ProxyFactory, relay: Any) -> None:
    """llama.cpp makes n choices in one call but reports one choice's usage: the proxy fans out instead."""
    proxy = start_proxy(relay.url, memory="off")

    def three_answers() -> Any:
        return proxy.client().chat.completions.create(
            model="qwen", messages=[{"role": "user", "content": "Name an animal."}], n=3, max_tokens=12
        )

    first = three_answers()
    assert relay.calls[0]["body"]["n"] == 3 and relay.calls[0]["choices"] == 3
    single = relay.calls[1:]
    assert len(single) == 3 and all(call["choices"] == 1 for call in single)  # made again, choice by choice
    assert len(first.choices) == 3
    assert first.usage.completion_tokens == sum(int(c["usage"]["completion_tokens"]) for c in single)
    before = len(relay.calls)
    second = three_answers()
    assert len(relay.calls) - before == 3  # from now on straight to one call per choice
    assert second.usage.completion_tokens == sum(int(c["usage"]["completion_tokens"]) for c in relay.calls[before:])
