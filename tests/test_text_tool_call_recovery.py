"""The risks of recovering tool calls a model wrote as text: a call invented from prose, a call to a
tool the request did not declare or did not allow, a call cut out of a longer answer. Each is left
alone; only an answer that is nothing but a call to a declared tool becomes `tool_calls`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.backend.tool_calls import callable_names, could_become_call, recover_completion, recover_stream

CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def request(tool_choice: Any = "auto", names: tuple[str, ...] = ("get_weather", "get_time")) -> dict[str, Any]:
    return {"messages": [], "tools": [tool(name) for name in names], "tool_choice": tool_choice}


def completion(content: str | None, finish_reason: str = "stop") -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    return {"id": "c", "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}


def recovered(content: str, body: dict[str, Any] | None = None, finish_reason: str = "stop") -> dict[str, Any]:
    return recover_completion(completion(content, finish_reason), body or request())["choices"][0]


def assert_untouched(content: str, body: dict[str, Any] | None = None, finish_reason: str = "stop") -> None:
    assert recovered(content, body, finish_reason) == completion(content, finish_reason)["choices"][0]


def called(choice: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert all(call["type"] == "function" and call["id"].startswith("call_") for call in calls)
    return [(call["function"]["name"], json.loads(call["function"]["arguments"])) for call in calls]


@pytest.mark.parametrize(
    "prose",
    [
        "The weather in Paris is sunny.",
        "I would call get_weather with the city Paris.",
        "",
        "   ",
        "{not json}",
        '"get_weather"',
        '{"city": "Paris"}',
        "[]",
        "[1, 2]",
    ],
)
def test_prose_is_never_turned_into_a_call(prose: str) -> None:
    assert_untouched(prose)


def test_a_tool_that_was_not_declared_is_never_called() -> None:
    assert_untouched('{"name": "delete_everything", "arguments": {}}')
    assert_untouched(f'[{CALL}, {{"name": "delete_everything", "arguments": {{}}}}]')


@pytest.mark.parametrize(
    "answer",
    [
        f"Sure! {CALL}",
        f"{CALL} I called the tool for you.",
        f"Here it is:\n```json\n{CALL}\n```",
        f"```json\n{CALL}\n```\nThat is the call.",
        f"<tool_call>{CALL}</tool_call> and some words",
        f"<tool_call>{CALL}</tool_call> and <tool_call>{CALL}</tool_call>",
        f"<tool_call>{CALL}</tool_call>\n```json\n{CALL}\n```",
        f"{CALL}\n{CALL}",
    ],
)
def test_extra_text_around_the_json_is_left_alone(answer: str) -> None:
    assert_untouched(answer)


@pytest.mark.parametrize(
    "answer",
    [
        CALL,
        f"  \n{CALL}\n",
        f"```json\n{CALL}\n```",
        f"```\n{CALL}\n```",
        f"<tool_call>\n{CALL}\n</tool_call>",
        f"```json\n<tool_call>{CALL}</tool_call>\n```",
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
    ],
)
def test_bare_fenced_and_tagged_calls_are_recovered(answer: str) -> None:
    assert called(recovered(answer)) == [("get_weather", {"city": "Paris"})]


def test_several_calls_are_recovered_in_order() -> None:
    other = '{"name": "get_time", "arguments": {"zone": "CET"}}'
    expected = [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "CET"})]
    assert called(recovered(f"[{CALL}, {other}]")) == expected
    assert called(recovered(f"<tool_call>{CALL}</tool_call>\n<tool_call>{other}</tool_call>")) == expected


@pytest.mark.parametrize(
    "answer",
    [
        '{"name": "get_weather", "arguments": "Paris"}',
        '{"name": "get_weather", "arguments": ["Paris"]}',
        '{"name": "get_weather", "arguments": "{not json"}',
        '{"name": "get_weather"}',
        '{"name": "get_weather", "arguments": {}, "parameters": {}}',
        '{"name": "get_weather", "arguments": {}, "comment": "extra"}',
        '{"name": ["get_weather"], "arguments": {}}',
        '{"name": {"get_weather": 1}, "arguments": {}}',
    ],
)
def test_a_malformed_call_is_left_alone(answer: str) -> None:
    assert_untouched(answer)


def test_a_named_tool_choice_accepts_only_that_name() -> None:
    named = request({"type": "function", "function": {"name": "get_time"}})
    assert_untouched(CALL, named)
    assert called(recovered('{"name": "get_time", "arguments": {}}', named)) == [("get_time", {})]
    undeclared = request({"type": "function", "function": {"name": "get_stock"}})
    assert callable_names(undeclared) == frozenset()
    assert_untouched('{"name": "get_stock", "arguments": {}}', undeclared)


def test_tool_choice_none_and_a_request_without_tools_recover_nothing() -> None:
    assert callable_names(request("none")) is None
    assert_untouched(CALL, request("none"))
    assert callable_names({"messages": []}) is None
    assert_untouched(CALL, {"messages": []})


def test_required_allows_every_declared_tool() -> None:
    assert callable_names(request("required")) == {"get_weather", "get_time"}


def test_a_cut_off_answer_and_a_real_tool_call_are_left_alone() -> None:
    assert_untouched(CALL, finish_reason="length")
    real = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    payload = completion(None, "tool_calls")
    payload["choices"][0]["message"]["tool_calls"] = [real]
    assert recover_completion(payload, request()) == payload


def test_every_choice_is_looked_at() -> None:
    payload = completion("Sunny.")
    payload["choices"].append({"index": 1, "message": {"role": "assistant", "content": CALL}, "finish_reason": "stop"})
    choices = recover_completion(payload, request())["choices"]
    assert choices[0] == payload["choices"][0]
    assert called(choices[1]) == [("get_weather", {"city": "Paris"})]


@pytest.mark.parametrize(
    ("text", "could"),
    [
        ("", True),
        ("  ", True),
        ('{"na', True),
        ("[", True),
        ("`", True),
        ("```js", True),
        ("```json\n{", True),
        ("<tool", True),
        ("<tool_call>\n{", True),
        ("The", False),
        ("```python", False),
        ("```\nimport", False),
        ("<b>", False),
    ],
)
def test_a_stream_is_held_back_only_while_it_could_still_be_a_call(text: str, could: bool) -> None:
    assert could_become_call(text) is could


# -- streams -----------------------------------------------------------------------------------


def chunk(content: str | None = None, finish: str | None = None, index: int = 0, **delta: Any) -> dict[str, Any]:
    if content is not None:
        delta["content"] = content
    return {
        "id": "s",
        "object": "chat.completion.chunk",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


USAGE = {"id": "s", "object": "chat.completion.chunk", "choices": [], "usage": {"total_tokens": 9}}


def relayed(chunks: list[dict[str, Any]], body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    async def source() -> AsyncIterator[dict[str, Any]]:
        for item in chunks:
            yield item

    async def collect() -> list[dict[str, Any]]:
        return [item async for item in recover_stream(source(), body or request())]

    return asyncio.run(collect())


def split(text: str, size: int = 3) -> list[dict[str, Any]]:
    return [chunk(text[i : i + size]) for i in range(0, len(text), size)]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])


def test_a_streamed_text_call_is_sent_as_a_tool_call_delta() -> None:
    sent = relayed([chunk("", role="assistant"), *split(f"```json\n{CALL}\n```"), chunk(finish="stop"), USAGE])
    assert text_of(sent) == ""
    deltas = [c["choices"][0]["delta"] for c in sent if c["choices"]]
    assert deltas[0] == {"role": "assistant"}
    calls = [d for d in deltas if d.get("tool_calls")]
    assert len(calls) == 1 and calls[0]["role"] == "assistant"
    (call,) = calls[0]["tool_calls"]
    assert call["index"] == 0 and call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert [c["choices"][0]["finish_reason"] for c in sent if c["choices"]][-1] == "tool_calls"
    assert sent[-1] == USAGE


def test_streamed_prose_passes_through_as_soon_as_it_cannot_be_a_call() -> None:
    answer = "The weather in Paris is sunny."
    sent = relayed([*split(answer), chunk(finish="stop"), USAGE])
    assert text_of(sent) == answer
    assert sent[0]["choices"][0]["delta"]["content"] == answer[:3]  # not held back
    assert sent[-2]["choices"][0]["finish_reason"] == "stop"


def test_streamed_json_that_is_no_call_is_flushed_whole_before_the_finish() -> None:
    for answer in ('{"city": "Paris"}', f"{CALL} done", '{"name": "delete_everything", "arguments": {}}'):
        sent = relayed([*split(answer), chunk(finish="stop")])
        assert text_of(sent) == answer
        assert sent[-1]["choices"][0]["finish_reason"] == "stop"
        assert not any(c["choices"][0]["delta"].get("tool_calls") for c in sent)


def test_a_streamed_code_fence_is_not_held_to_the_end() -> None:
    sent = relayed([*split("```python\nprint(1)\n```"), chunk(finish="stop")])
    assert sent[0]["choices"][0]["delta"]["content"] == "```pyt"  # flushed once it cannot be a json fence
    assert text_of(sent) == "```python\nprint(1)\n```"


def test_a_cut_off_streamed_call_stays_text() -> None:
    sent = relayed([*split(CALL), chunk(finish="length")])
    assert text_of(sent) == CALL and sent[-1]["choices"][0]["finish_reason"] == "length"


def test_a_stream_with_real_tool_calls_or_no_tools_passes_through() -> None:
    real = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]
    chunks = [chunk(role="assistant", tool_calls=real), chunk(finish="tool_calls"), USAGE]
    assert relayed(chunks) == chunks
    plain = [*split(CALL), chunk(finish="stop")]
    assert relayed(plain, {"messages": []}) == plain
    assert relayed(plain, request("none")) == plain


def test_other_streamed_choices_are_recovered_on_their_own() -> None:
    sent = relayed(
        [chunk(CALL, index=1), chunk("Sunny.", index=0), chunk(finish="stop", index=0), chunk(finish="stop", index=1)]
    )
    by_index: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for c in sent:
        for choice in c["choices"]:
            by_index[choice["index"]].append(choice)
    assert "".join(ch["delta"].get("content") or "" for ch in by_index[0]) == "Sunny."
    assert any(ch["delta"].get("tool_calls") for ch in by_index[1])
    assert by_index[1][-1]["finish_reason"] == "tool_calls"
