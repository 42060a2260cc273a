"""A scripted OpenAI-compatible backend for tests where what the model says must be controlled."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request

from proxy.learning.lessons import LESSON_SYSTEM
from proxy.learning.verifier import JUDGE_SYSTEM
from tests.conftest import ServerThread, stub_url


class FakeModel:
    """Answers questions with `answer`, lesson requests with the next of `lessons`, the judge with
    `judge`; records every body it gets, and each kind apart: background lesson and judge calls can
    land between a test's request and its next look, so a test reads the kind it means."""

    def __init__(self, answer: str, lessons: list[str] | None = None, judge: str = "yes") -> None:
        lessons = lessons or ["Work step by step."]
        self.bodies: list[dict[str, Any]] = []
        self.chat_bodies: list[dict[str, Any]] = []
        self.lesson_bodies: list[dict[str, Any]] = []
        self.judge_bodies: list[dict[str, Any]] = []
        self.lesson_calls = 0
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> dict[str, Any]:
            body = await request.json()
            self.bodies.append(body)
            text = answer
            system = body["messages"][0]["content"]
            if system == LESSON_SYSTEM:
                text = lessons[min(self.lesson_calls, len(lessons) - 1)]
                self.lesson_calls += 1
                self.lesson_bodies.append(body)
            elif system == JUDGE_SYSTEM:
                text = judge
                self.judge_bodies.append(body)
            else:
                self.chat_bodies.append(body)
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            usage = {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}
            return {"id": f"chatcmpl-fake{len(self.bodies)}", "object": "chat.completion", "created": 0,
                    "model": body.get("model"), "choices": [choice], "usage": usage}  # fmt: skip

        self.server = ServerThread(app).start()
        self.url = stub_url(self.server)


@pytest.fixture(name="fake_model")
def fake_model_fixture() -> Iterator[Callable[..., FakeModel]]:
    """Import it into a test module to use the `fake_model` fixture: starts fake models, stops them after."""
    started: list[FakeModel] = []

    def start(answer: str, lessons: list[str] | None = None, judge: str = "yes") -> FakeModel:
        started.append(FakeModel(answer, lessons, judge))
        return started[-1]

    yield start
    for fake in started:
        fake.server.stop()
