"""The core promise on real parts: llama.cpp + Qwen2.5-0.5B, MiniLM, FAISS, the openai SDK."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.conftest import ProxyFactory

SYSTEM = "Answer with one short sentence."
QUESTION = "Tom has 3 apples and buys 4 more. How many apples does Tom have now?"
PARAPHRASE = "Here is a word problem: Tom has 3 apples and buys 4 more. What is the number of apples Tom has now?"
OTHER_NUMBERS = "Tom has 5 apples and buys 9 more. How many apples does Tom have now?"
UNRELATED = "Name the capital city of France."

pytestmark = pytest.mark.timeout(600)


def ask(proxy, question: str, system: str = SYSTEM, **kwargs):
    client = kwargs.pop("client", None) or proxy.client()
    raw = client.chat.completions.with_raw_response.create(
        model="qwen",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        temperature=kwargs.pop("temperature", 0),
        max_tokens=kwargs.pop("max_tokens", 48),
        **kwargs,
    )
    return raw.headers, raw.parse()


def backend_completion_tokens(proxy) -> float:
    text = proxy.container.metrics.render().decode()
    return sum(float(v) for v in re.findall(r"^speedup_backend_completion_tokens_total\{.*\} (\S+)$", text, re.M))


def test_repeat_is_reused_with_zero_backend_tokens(start_proxy: ProxyFactory, llama_url: str) -> None:
    proxy = start_proxy(llama_url)
    headers, first = ask(proxy, QUESTION)
    assert headers["x-speedup-tier"] == "cold"
    assert first.usage.completion_tokens > 0
    proxy.settle()
    spent = backend_completion_tokens(proxy)

    headers, again = ask(proxy, QUESTION)
    assert headers["x-speedup-tier"] == "reuse"
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage.completion_tokens == 0 and again.usage.prompt_tokens == 0
    assert backend_completion_tokens(proxy) == spent
    assert int(headers["x-speedup-saved-tokens"]) == first.usage.completion_tokens
    assert headers["x-speedup-episodes"].startswith("ep_")


def test_paraphrase_with_same_numbers_is_reused(start_proxy: ProxyFactory, llama_url: str) -> None:
    proxy = start_proxy(llama_url)
    _, first = ask(proxy, QUESTION)
    proxy.settle()
    headers, reworded = ask(proxy, PARAPHRASE)
    assert headers["x-speedup-tier"] == "reuse"
    assert float(headers["x-speedup-similarity"]) < 1.0
    assert reworded.choices[0].message.content == first.choices[0].message.content


def test_other_numbers_are_never_reused_but_guided(start_proxy: ProxyFactory, llama_url: str) -> None:
    proxy = start_proxy(llama_url)
    _, cold = ask(proxy, QUESTION)
    proxy.settle()
    [learned] = proxy.container.memory.list_episodes("local")
    headers, guided = ask(proxy, OTHER_NUMBERS)
    assert headers["x-speedup-tier"] == "guided"
    assert headers["x-speedup-episodes"] == learned.id
    assert guided.usage.completion_tokens > 0, "an S3 question must reach the backend"
    # The exemplar turns were injected: the backend read more prompt than for the cold call.
    assert guided.usage.prompt_tokens > cold.usage.prompt_tokens + 10


def test_unrelated_question_is_cold_with_nothing_injected(start_proxy: ProxyFactory, llama_url: str) -> None:
    proxy = start_proxy(llama_url)
    _, first = ask(proxy, QUESTION)
    proxy.settle()
    headers, unrelated = ask(proxy, UNRELATED)
    assert headers["x-speedup-tier"] == "cold"
    assert headers["x-speedup-episodes"] == ""
    assert headers["x-speedup-saved-tokens"] == "0"
    assert float(headers["x-speedup-similarity"]) < proxy.container.settings.policy.guided_similarity


def test_streaming_relays_chunks_and_usage_then_reuse_streams_too(start_proxy: ProxyFactory, llama_url: str) -> None:
    proxy = start_proxy(llama_url)
    client = proxy.client()
    messages = [{"role": "user", "content": "Count from 1 to 5, separated by commas."}]

    def stream_once():
        chunks = list(
            client.chat.completions.create(
                model="qwen",
                messages=messages,
                temperature=0,
                max_tokens=40,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return chunks, text

    chunks, text = stream_once()
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 3, "a stream must arrive in pieces, not one blob"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].choices == []
    proxy.settle()

    replayed, replayed_text = stream_once()
    assert replayed_text == text
    assert len([c for c in replayed if c.choices and c.choices[0].delta.content]) > 3
    assert replayed[-1].usage.completion_tokens == 0


def test_async_sdk_and_no_usage_chunk_unless_asked(start_proxy: ProxyFactory, llama_url: str) -> None:
    proxy = start_proxy(llama_url)

    async def run() -> tuple[str, list]:
        client = proxy.async_client()
        result = await client.chat.completions.create(
            model="qwen", messages=[{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0
        )
        stream = await client.chat.completions.create(
            model="qwen", messages=[{"role": "user", "content": "Say goodbye."}], max_tokens=16, stream=True
        )
        chunks = [chunk async for chunk in stream]
        await client.close()
        return result.choices[0].message.content, chunks

    text, chunks = asyncio.run(run())
    assert text
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_n_above_one_is_fanned_out_for_llama_cpp(start_proxy: ProxyFactory, llama_url: str) -> None:
    proxy = start_proxy(llama_url, backend_supports_n=False)
    result = proxy.client().chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": "Give me a fruit name."}], n=2, max_tokens=12
    )
    assert [choice.index for choice in result.choices] == [0, 1]
    assert all(choice.message.content for choice in result.choices)


def test_memory_survives_restart(start_proxy: ProxyFactory, llama_url: str, tmp_path) -> None:
    first = start_proxy(llama_url, data_dir=tmp_path / "kept")
    _, original = ask(first, QUESTION)
    first.settle()
    first.stop()

    second = start_proxy(llama_url, data_dir=tmp_path / "kept")
    headers, again = ask(second, QUESTION)
    assert headers["x-speedup-tier"] == "reuse"
    assert again.choices[0].message.content == original.choices[0].message.content
