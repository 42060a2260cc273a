"""The request path under a lying backend and a tight client budget: what reaches memory, what is reused."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.conftest import ProxyFactory, ServerThread, stub_url
from tests.fault_backend import FaultBackend


@pytest.fixture
def fault() -> Iterator[FaultBackend]:
    backend = FaultBackend()
    yield backend
    backend.stop()


def ask(proxy, question: str = "What is the refund window for order 1234?", **kwargs):
    return proxy.client().chat.completions.with_raw_response.create(
        model="stub", temperature=0, messages=[{"role": "user", "content": question}], **kwargs
    )


@pytest.mark.parametrize("stream", [False, True])
def test_nan_from_backend_is_never_stored(start_proxy: ProxyFactory, fault: FaultBackend, stream: bool) -> None:
    proxy = start_proxy(fault.url)
    fault.mode = "nan"
    for _ in range(2):  # the second time, too, from the backend: nothing was remembered to serve
        with pytest.raises(openai.APIError):
            response = ask(proxy, stream=stream)
            for _chunk in response.parse():
                pass
        proxy.settle()
        assert proxy.container.memory.count() == 0
    assert fault.calls == 2


def test_error_in_a_200_body_is_never_a_success(start_proxy: ProxyFactory, fault: FaultBackend) -> None:
    proxy = start_proxy(fault.url)
    fault.mode = "error_body"
    with pytest.raises(openai.APIStatusError) as caught:
        ask(proxy)
    assert caught.value.status_code == 502


def test_reused_answer_respects_max_tokens(start_proxy: ProxyFactory, stub_backend: ServerThread) -> None:
    proxy = start_proxy(stub_url(stub_backend))
    assert ask(proxy).headers["x-speedup-tier"] == "cold"  # "The answer is 42.": 4 completion tokens
    proxy.settle()
    for limit in ({"max_tokens": 1}, {"max_completion_tokens": 3}):
        raw = ask(proxy, **limit)
        answer = raw.parse().choices[0]
        assert raw.headers["x-speedup-tier"] != "reuse"
        assert answer.finish_reason == "length" and len(answer.message.content.split()) < 4
    for fits in ({"max_tokens": 4}, {"max_completion_tokens": 100}, {}):
        assert ask(proxy, **fits).headers["x-speedup-tier"] == "reuse"


def test_reused_stream_respects_max_tokens(start_proxy: ProxyFactory, stub_backend: ServerThread) -> None:
    proxy = start_proxy(stub_url(stub_backend))
    ask(proxy)
    proxy.settle()
    calls = stub_backend.app.state.calls
    with proxy.client().chat.completions.with_streaming_response.create(
        model="stub",
        temperature=0,
        messages=[{"role": "user", "content": "What is the refund window for order 1234?"}],
        max_tokens=2,
        stream=True,
    ) as response:
        assert response.headers["x-speedup-tier"] != "reuse"
        chunks = list(response.parse())
    assert stub_backend.app.state.calls == calls + 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
