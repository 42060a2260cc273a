"""The HTTP contract and the guards around it, where a fake backend is the only way to show it."""

from __future__ import annotations

import time

import numpy as np
import openai
import pytest

from bench.stub_backend import create_stub_app
from tests.conftest import ProxyFactory, ServerThread, free_port, stub_url


def chat(proxy, content: str = "What is 2 + 2?", **kwargs):
    return proxy.client(api_key=kwargs.pop("api_key", "unused")).chat.completions.with_raw_response.create(
        model="stub", messages=[{"role": "user", "content": content}], **kwargs
    )


def test_backend_down_gives_502_envelope_fast(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(f"http://127.0.0.1:{free_port()}/v1")
    started = time.perf_counter()
    with pytest.raises(openai.APIStatusError) as caught:
        chat(proxy)
    assert time.perf_counter() - started < 2.0
    assert caught.value.status_code == 502
    error = caught.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "backend_unavailable"


def test_backend_timeout_gives_504_envelope(start_proxy: ProxyFactory) -> None:
    hanging = ServerThread(create_stub_app(mode="hang")).start()
    try:
        proxy = start_proxy(stub_url(hanging), backend_timeout_s=1)
        with pytest.raises(openai.APIStatusError) as caught:
            chat(proxy)
        assert caught.value.status_code == 504
        assert caught.value.response.json()["error"]["type"] == "timeout_error"
    finally:
        hanging.server.force_exit = True
        hanging.stop()


def test_backend_error_is_relayed_and_never_remembered(start_proxy: ProxyFactory) -> None:
    broken = ServerThread(create_stub_app(mode="error")).start()
    try:
        proxy = start_proxy(stub_url(broken))
        for _ in range(2):
            with pytest.raises(openai.APIStatusError) as caught:
                chat(proxy, temperature=0)
            assert caught.value.status_code == 502
        proxy.settle()
        assert proxy.container.memory.count() == 0
    finally:
        broken.stop()


def test_cut_off_answer_is_never_remembered(start_proxy: ProxyFactory, stub_backend: ServerThread) -> None:
    proxy = start_proxy(stub_url(stub_backend))
    chat(proxy, temperature=0, max_tokens=2)  # the stub's answer is longer: finish_reason "length"
    proxy.settle()
    assert proxy.container.memory.count() == 0
    assert chat(proxy, temperature=0, max_tokens=2).headers["x-speedup-tier"] == "cold"


def test_malformed_requests_get_openai_envelopes(
    start_proxy: ProxyFactory, stub_backend: ServerThread, raw_http
) -> None:
    proxy = start_proxy(stub_url(stub_backend), max_body_bytes=4096)
    url = proxy.url + "/v1/chat/completions"
    bad_json = raw_http.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"
    no_messages = raw_http.post(url, json={"model": "stub"})
    assert no_messages.status_code == 400 and no_messages.json()["error"]["param"] == "messages"
    empty_messages = raw_http.post(url, json={"model": "stub", "messages": []})
    assert empty_messages.status_code == 400
    huge = raw_http.post(url, json={"model": "stub", "messages": [{"role": "user", "content": "x" * 10_000}]})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
    assert stub_backend.app.state.calls == 0


def test_unknown_api_key_is_401(start_proxy: ProxyFactory, stub_backend: ServerThread) -> None:
    proxy = start_proxy(stub_url(stub_backend), api_keys={"key-a": "acme"})
    with pytest.raises(openai.AuthenticationError) as caught:
        chat(proxy, api_key="wrong")
    assert caught.value.response.json()["error"]["code"] == "invalid_api_key"
    assert chat(proxy, api_key="key-a").status_code == 200


def test_scope_isolation_between_tenants(start_proxy: ProxyFactory, stub_backend: ServerThread) -> None:
    proxy = start_proxy(stub_url(stub_backend), api_keys={"key-a": "acme", "key-b": "globex"})
    question = "What is the refund window for order 1234?"
    assert chat(proxy, question, api_key="key-a", temperature=0).headers["x-speedup-tier"] == "cold"
    proxy.settle()
    assert chat(proxy, question, api_key="key-a", temperature=0).headers["x-speedup-tier"] == "reuse"
    other = chat(proxy, question, api_key="key-b", temperature=0)
    assert other.headers["x-speedup-tier"] == "cold"
    assert other.headers["x-speedup-episodes"] == ""
    assert float(other.headers["x-speedup-similarity"]) == 0.0


def test_scope_includes_system_prompt_and_sampling(start_proxy: ProxyFactory, stub_backend: ServerThread) -> None:
    proxy = start_proxy(stub_url(stub_backend))
    client = proxy.client()

    def tier(system: str, **kwargs) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="stub",
            messages=[{"role": "system", "content": system}, {"role": "user", "content": "How do I reset it?"}],
            **kwargs,
        )
        proxy.settle()
        return raw.headers["x-speedup-tier"]

    assert tier("You support the router.", temperature=0) == "cold"
    assert tier("You support the router.", temperature=0) == "reuse"
    assert tier("You support the dishwasher.", temperature=0) == "cold"
    assert tier("You support the router.", temperature=0, response_format={"type": "json_object"}) == "cold"


def test_follow_up_from_another_conversation_is_not_reused(
    start_proxy: ProxyFactory, stub_backend: ServerThread
) -> None:
    proxy = start_proxy(stub_url(stub_backend))
    client = proxy.client()

    def follow_up(previous: str) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="stub",
            temperature=0,
            messages=[
                {"role": "user", "content": previous},
                {"role": "assistant", "content": "Sure."},
                {"role": "user", "content": "How old is he?"},
            ],
        )
        proxy.settle()
        return raw.headers["x-speedup-tier"]

    assert follow_up("Tell me about Barack Obama.") == "cold"
    assert follow_up("Tell me about Barack Obama.") == "reuse"
    assert follow_up("Tell me about Tom Hanks.") != "reuse"


def test_reuse_needs_temperature_zero_or_explicit_opt_in(start_proxy: ProxyFactory, stub_backend: ServerThread) -> None:
    proxy = start_proxy(stub_url(stub_backend))
    question = "Which plan includes phone support?"
    chat(proxy, question, temperature=0.7)
    proxy.settle()
    assert chat(proxy, question, temperature=0.7).headers["x-speedup-tier"] == "guided"
    opted_in = chat(proxy, question, temperature=0.7, extra_body={"speedup": {"reuse": "allow"}})
    assert opted_in.headers["x-speedup-tier"] == "reuse"
    opted_out = chat(proxy, question, temperature=0.7, extra_headers={"x-speedup-reuse": "never"})
    assert opted_out.headers["x-speedup-tier"] != "reuse"
    assert "speedup" not in stub_backend.app.state.bodies[-1], "the proxy's own field must not reach the backend"


def test_tools_are_reused_only_for_the_identical_request(start_proxy: ProxyFactory, stub_backend: ServerThread) -> None:
    proxy = start_proxy(stub_url(stub_backend))
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    first = chat(proxy, "Look up order 1234.", temperature=0, tools=tools, seed=7, stop=["\n\n"])
    forwarded = stub_backend.app.state.bodies[-1]
    assert forwarded["tools"] == tools and forwarded["seed"] == 7 and forwarded["stop"] == ["\n\n"]
    assert first.headers["x-speedup-tier"] == "cold"
    proxy.settle()
    assert (
        chat(proxy, "Look up order 1234.", temperature=0, tools=tools, seed=7, stop=["\n\n"]).headers["x-speedup-tier"]
        == "reuse"
    )
    reworded = chat(proxy, "Please look up order 1234.", temperature=0, tools=tools, seed=7, stop=["\n\n"])
    assert reworded.headers["x-speedup-tier"] != "reuse"


@pytest.mark.parametrize(("words", "rungs"), [(120, [64, 128]), (300, [64, 128, 500])])
def test_guided_cut_off_climbs_the_token_ladder_to_the_client_budget(
    start_proxy: ProxyFactory, words: int, rungs: list[int]
) -> None:
    long_answer = " ".join(["word"] * words)
    stub = ServerThread(create_stub_app(answer=long_answer)).start()
    try:
        proxy = start_proxy(stub_url(stub))
        chat(proxy, "Describe the return policy for shoes.", temperature=0.5, max_tokens=500)
        proxy.settle()
        [episode] = proxy.container.memory.list_episodes("local")
        episode.usage.completion_tokens = 10  # pretend the episode was short: the guided budget is 64
        proxy.container.memory.update(episode)  # stores hand out copies: a change goes through update
        stub.app.state.bodies.clear()
        raw = chat(proxy, "Describe the return policy for boots.", temperature=0.5, max_tokens=500)
        assert raw.headers["x-speedup-tier"] == "guided"
        budgets = [body["max_tokens"] for body in stub.app.state.bodies]
        assert budgets == rungs  # 1x, 2x the guided budget, then the client's limit; stops at the first fit
        assert raw.headers["x-speedup-attempts"] == str(len(rungs))
        assert raw.parse().usage.completion_tokens == sum(rungs[:-1]) + words  # every attempt is counted
        assert raw.parse().choices[0].finish_reason == "stop"
    finally:
        stub.stop()


def test_embedder_failure_fails_open(start_proxy: ProxyFactory, stub_backend: ServerThread, encoder) -> None:
    class BrokenEncoder:
        dim = encoder.dim

        def encode(self, texts: list[str]) -> np.ndarray:
            raise RuntimeError("embedder down")

    proxy = start_proxy(stub_url(stub_backend), encoder_override=BrokenEncoder())
    for _ in range(2):
        raw = chat(proxy, temperature=0)
        assert raw.status_code == 200 and raw.headers["x-speedup-tier"] == "cold"
    assert 'speedup_memory_failures_total{stage="embed_error"} 2.0' in proxy.container.metrics.render().decode()


def test_slow_embedder_is_cut_off_at_the_default_deadline(
    start_proxy: ProxyFactory, stub_backend: ServerThread, encoder
) -> None:
    class SlowEncoder:
        dim = encoder.dim

        def encode(self, texts: list[str]) -> np.ndarray:
            time.sleep(0.5)
            return encoder.encode(texts)

    proxy = start_proxy(stub_url(stub_backend), encoder_override=SlowEncoder(), memory_deadline_ms=50)
    started = time.perf_counter()
    raw = chat(proxy, "A question the slow embedder sees", temperature=0)
    assert time.perf_counter() - started < 0.4
    assert raw.headers["x-speedup-tier"] == "cold"
    assert 'stage="embed_timeout"' in proxy.container.metrics.render().decode()


def test_models_health_and_metrics(start_proxy: ProxyFactory, stub_backend: ServerThread, raw_http) -> None:
    proxy = start_proxy(stub_url(stub_backend))
    assert [m.id for m in proxy.client().models.list().data] == ["stub"]
    health = raw_http.get(proxy.url + "/healthz").json()
    assert health["status"] == "ok" and health["memory"]["backend"] == "local"
    chat(proxy, temperature=0)
    metrics = raw_http.get(proxy.url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for family in (
        "speedup_requests_total",
        "speedup_backend_prompt_tokens_total",
        "speedup_backend_completion_tokens_total",
        "speedup_saved_tokens_total",
        "speedup_request_latency_seconds_bucket",
        "speedup_proxy_added_latency_seconds_bucket",
        "speedup_episodes",
        "speedup_memory_failures_total",
    ):
        assert family in metrics.text
