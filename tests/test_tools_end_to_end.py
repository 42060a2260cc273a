"""Tool calls through the proxy: a backend's `tool_calls` reach the client unchanged, a call the
model wrote as text comes back as `tool_calls`, and a tool-call answer is never remembered as a text
episode.

The default backend (the embedded llama.cpp) runs with Jinja chat templates, which its OpenAI
tool-call parsing needs; but the bundled build returns the 0.5B model's call as text, which the proxy
recovers (`proxy/backend/tool_calls.py`). The pass-through half is checked against a backend that
answers with a tool call the way llama.cpp's server does when its parser works.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from fastapi import FastAPI, Request

from proxy.backend.llamacpp_runner import build_params, parse_args
from tests.conftest import ProxyFactory, RunningProxy, ServerThread

pytestmark = pytest.mark.timeout(600)

QUESTION = "What is the weather in Paris? Use the tool."
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city's name, e.g. Berlin"}},
            "required": ["city"],
        },
    },
}


def ask_for_the_weather(proxy: RunningProxy, tool_choice: Any) -> Any:
    return proxy.client().chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": QUESTION}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice=tool_choice,
        max_tokens=64,
        temperature=0,
    )


def assert_a_weather_call_and_no_episode(proxy: RunningProxy, completion: Any) -> None:
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert calls, choice.message
    assert calls[0].type == "function" and calls[0].function.name == "get_weather"
    assert "paris" in json.loads(calls[0].function.arguments)["city"].lower()
    proxy.settle()
    memory = proxy.container.memory
    assert memory is not None and memory.count() == 0  # a tool call is never stored as a text episode
    registry = proxy.container.metrics.registry
    # skip_reason (proxy/serving/remember.py) refuses it by its finish_reason, before looking at tool_calls.
    assert registry.get_sample_value("speedup_episodes_skipped_total", {"reason": "finish_tool_calls"}) == 1


def test_the_embedded_server_runs_with_jinja_chat_templates() -> None:
    """llama.cpp parses tool calls only through the model's Jinja template: set, not left to a default."""
    common = ["--model", "m.gguf", "--ready-file", "ready.json"]
    assert build_params(parse_args(common)).use_jinja is True
    assert build_params(parse_args([*common, "--no-jinja"])).use_jinja is False


def test_the_embedded_model_returns_real_tool_calls(start_proxy: ProxyFactory, llama_url: str) -> None:
    # "auto": the bundled build does not enforce "required", under which the 0.5B model rambles on
    # after the call; left to choose, it answers this question with the call alone.
    proxy = start_proxy(llama_url)
    assert_a_weather_call_and_no_episode(proxy, ask_for_the_weather(proxy, "auto"))


def test_a_streamed_tool_call_reassembles_and_leaves_no_episode(start_proxy: ProxyFactory, llama_url: str) -> None:
    proxy = start_proxy(llama_url)
    stream = proxy.client().chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": QUESTION}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="auto",
        max_tokens=64,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    content, finish, usage = "", None, None
    calls: dict[int, dict[str, str]] = {}
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                call["name"] += (delta.function and delta.function.name) or ""
                call["arguments"] += (delta.function and delta.function.arguments) or ""
    assert finish == "tool_calls" and content == ""
    assert list(calls) == [0] and calls[0]["id"].startswith("call_") and calls[0]["name"] == "get_weather"
    assert "paris" in json.loads(calls[0]["arguments"])["city"].lower()
    assert usage is not None and usage.completion_tokens > 0
    proxy.settle()
    memory = proxy.container.memory
    assert memory is not None and memory.count() == 0
    registry = proxy.container.metrics.registry
    assert registry.get_sample_value("speedup_episodes_skipped_total", {"reason": "finish_tool_calls"}) == 1


def tool_calling_backend() -> FastAPI:
    """Answers every request with a get_weather call, shaped as llama.cpp's server shapes one."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        assert body["tools"][0]["function"]["name"] == "get_weather"  # the proxy forwards the tools
        call = {"id": "call_" + uuid.uuid4().hex[:8], "type": "function"}
        call["function"] = {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "qwen"),
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
        }

    return app


def test_a_tool_call_reaches_the_client_and_leaves_no_episode(start_proxy: ProxyFactory) -> None:
    backend = ServerThread(tool_calling_backend()).start()
    try:
        proxy = start_proxy(f"http://127.0.0.1:{backend.port}/v1")
        named = {"type": "function", "function": {"name": "get_weather"}}
        assert_a_weather_call_and_no_episode(proxy, ask_for_the_weather(proxy, named))
    finally:
        backend.stop()
