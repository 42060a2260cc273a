"""Tool calls a model wrote as text, recovered as OpenAI `tool_calls`.

Only an answer that is nothing but a call to a tool the request declared (bare JSON, or in ```json
fences or <tool_call> tags) is recovered; prose, extra text and undeclared names are left alone.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

_FENCED = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)
_TAGGED = re.compile(r"\s*<tool_call>(.*?)</tool_call>\s*", re.DOTALL)
_OPENINGS = ("```json", "```", "<tool_call>")
_ARGUMENT_KEYS = ("arguments", "parameters")


def callable_names(body: dict[str, Any]) -> frozenset[str] | None:
    """The function names a text call may name, or None when the request allows no tool call."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    declared = frozenset(
        name
        for tool in tools
        if isinstance(tool, dict) and isinstance(name := (tool.get("function") or {}).get("name"), str)
    )
    if isinstance(choice, dict):
        named = (choice.get("function") or {}).get("name")
        return declared & {named} if isinstance(named, str) else frozenset()
    return declared


def _unwrapped(text: str) -> list[str]:
    """The JSON texts an answer consists of: itself, or what its fences and tags hold."""
    text = text.strip()
    if fenced := _FENCED.fullmatch(text):
        text = fenced.group(1)
    parts = _TAGGED.split(text)
    if len(parts) > 1 and not "".join(parts[::2]):
        return [block.strip() for block in parts[1::2]]
    return [text]


def _arguments(value: Any) -> str | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else None


def _call(item: Any, names: frozenset[str]) -> dict[str, Any] | None:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or item["name"] not in names:
        return None
    given = [key for key in _ARGUMENT_KEYS if key in item]
    if len(given) != 1 or set(item) != {"name", given[0]}:
        return None
    arguments = _arguments(item[given[0]])
    if arguments is None:
        return None
    function = {"name": item["name"], "arguments": arguments}
    return {"id": "call_" + secrets.token_hex(12), "type": "function", "function": function}


def text_calls(text: str, names: frozenset[str]) -> list[dict[str, Any]] | None:
    """The OpenAI tool calls a text answer is, or None when it is anything but calls to `names`."""
    items: list[Any] = []
    for block in _unwrapped(text):
        try:
            parsed = json.loads(block)
        except ValueError:
            return None
        items.extend(parsed if isinstance(parsed, list) else [parsed])
    calls = [_call(item, names) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return [call for call in calls if call is not None]


def could_become_call(text: str) -> bool:
    """Whether more text could still make this the beginning of a text tool call."""
    head = text.lstrip()
    for opening in _OPENINGS:
        if opening.startswith(head):
            return True
        if head.startswith(opening):
            return could_become_call(head[len(opening) :])
    return head.startswith(("{", "["))


def recover_choice(choice: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    message = choice.get("message") or {}
    content = message.get("content")
    if choice.get("finish_reason") != "stop" or message.get("tool_calls") or not isinstance(content, str):
        return choice
    calls = text_calls(content, names)
    if calls is None:
        return choice
    message = {**message, "role": "assistant", "content": None, "tool_calls": calls}
    return {**choice, "message": message, "finish_reason": "tool_calls"}


def recover_completion(payload: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A completion with each choice that is a text call to a declared tool rewritten as tool_calls."""
    names = callable_names(body)
    if not names or not isinstance(payload.get("choices"), list):
        return payload
    return {**payload, "choices": [recover_choice(choice, names) for choice in payload["choices"]]}


class _HeldChoice:
    """One streamed choice's content, held back while it could still be a text tool call."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        self.text = ""
        self.holding = True

    def take(self, choice: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The choices to send before this one, and this one as it is to be sent (None: nothing yet)."""
        if not self.holding:
            return [], choice
        delta = dict(choice.get("delta") or {})
        if delta.get("tool_calls"):
            self.holding = False
            return ([self._content(choice, self.text)] if self.text else []), choice
        self.text += delta.pop("content", None) or ""
        finish = choice.get("finish_reason")
        if not finish and could_become_call(self.text):
            return [], ({**choice, "delta": delta} if any(v is not None for v in delta.values()) else None)
        self.holding = False
        calls = text_calls(self.text, self.names) if finish == "stop" else None
        if calls is None:
            return [], {**choice, "delta": {**delta, "content": self.text}}
        return [self._call_choice(choice, calls)], {**choice, "delta": {}, "finish_reason": "tool_calls"}

    def rest(self, index: int) -> dict[str, Any] | None:
        """What is still held when the stream ends without finishing this choice."""
        if not self.holding or not self.text:
            return None
        self.holding = False
        return self._content({"index": index}, self.text)

    @staticmethod
    def _content(choice: dict[str, Any], text: str) -> dict[str, Any]:
        return {"index": choice.get("index", 0), "delta": {"content": text}, "finish_reason": None}

    @staticmethod
    def _call_choice(choice: dict[str, Any], calls: list[dict[str, Any]]) -> dict[str, Any]:
        deltas = [{"index": i, **call} for i, call in enumerate(calls)]
        delta = {"role": "assistant", "tool_calls": deltas}
        return {"index": choice.get("index", 0), "delta": delta, "finish_reason": None}


async def recover_stream(chunks: AsyncIterator[dict[str, Any]], body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """A stream's chunks with each choice that is a text call to a declared tool sent as tool_calls."""
    names = callable_names(body)
    held: dict[int, _HeldChoice] = {}
    last: dict[str, Any] = {}
    try:
        async for chunk in chunks:
            if not names or not chunk.get("choices"):
                yield chunk
                continue
            last = chunk
            before: list[dict[str, Any]] = []
            after: list[dict[str, Any]] = []
            for choice in chunk["choices"]:
                state = held.setdefault(choice.get("index", 0), _HeldChoice(names))
                sent_before, sent = state.take(choice)
                before += sent_before
                after += [sent] if sent is not None else []
            if before:
                yield {**{k: v for k, v in chunk.items() if k != "usage"}, "choices": before}
            if after or chunk.get("usage"):
                yield {**chunk, "choices": after}
        rest = [choice for index, state in held.items() if (choice := state.rest(index)) is not None]
        if rest:
            yield {**{k: v for k, v in last.items() if k != "usage"}, "choices": rest}
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
