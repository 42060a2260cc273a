"""Lessons: written in the background, injected only for similar questions, one per cluster."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from proxy.learning.lessons import LESSON_PREFIX, clean_lesson, inject_lesson
from proxy.learning.memory_modes import MemoryModes
from tests.conftest import ProxyFactory, RunningProxy
from tests.fake_model import FakeModel, fake_model_fixture  # noqa: F401 - provides `fake_model`

pytestmark = pytest.mark.timeout(600)

SYSTEM = "Solve the problem. End with 'Answer: <number>'."
PENCILS = "Sara has 12 pencils and gives 5 to Tom. Then she buys 3 packs of 4 pencils. How many pencils does she have?"
OTHER_NUMBERS = (
    "Mia has 20 pencils and gives 7 to Ann. Then she buys 2 packs of 5 pencils. How many pencils does she have?"
)
THIRD_VARIANT = (
    "Sara has 15 pencils and gives 6 to Tom. Then she buys 2 packs of 5 pencils. How many pencils does she have?"
)
UNRELATED = "Name the capital city of France."


def ask(proxy: RunningProxy, question: str, max_tokens: int = 48, **speedup: str):
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="qwen",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        temperature=0,
        max_tokens=max_tokens,
        extra_body={"speedup": speedup} if speedup else None,
    )
    return raw.headers, raw.parse()


def record_backend_requests(proxy: RunningProxy) -> list[dict[str, Any]]:
    """Every body the proxy sends to the real backend, from now on."""
    seen: list[dict[str, Any]] = []
    complete = proxy.container.backend.complete

    async def recording(body: dict[str, Any]):
        seen.append(body)
        return await complete(body)

    proxy.container.backend.complete = recording  # type: ignore[method-assign]
    return seen


def reflection_tokens(proxy: RunningProxy) -> float:
    text = proxy.container.metrics.render().decode()
    return sum(float(v) for v in re.findall(r"^speedup_reflection_tokens_total\{.*\} (\S+)$", text, re.M))


# -- with the real backend -------------------------------------------------------------------


def test_lesson_from_a_bad_answer_is_written_off_the_request_path_and_injected_for_a_similar_question(
    start_proxy: ProxyFactory, llama_url: str
) -> None:
    # The default mode stays exemplars: the request asks for `reflect`. One failure is enough for a lesson here.
    proxy = start_proxy(
        llama_url,
        memory_modes={"reflection_max_tokens": 48, "min_cluster_size": 1, "request_override_tenants": ["local"]},
    )
    costs: list[Any] = []
    proxy.container.reflection_listeners.append(costs.append)
    store = proxy.container.learning.reflections
    headers, first = ask(proxy, PENCILS, memory_mode="reflect")
    assert headers["x-speedup-memory-mode"] == "reflect"
    proxy.settle()
    assert store.count() == 0  # a good (unrated) answer teaches nothing in `reflect`

    started = time.perf_counter()
    answer = httpx.post(proxy.url + "/v1/feedback", json={"response_id": first.id, "rating": "bad"}, timeout=30)
    assert answer.status_code == 200
    assert store.count() == 0, "the lesson must be written in the background, not before feedback returns"
    assert time.perf_counter() - started < 2.0
    proxy.settle(240)
    [lesson] = store.list_reflections("local")
    assert lesson.kind == "reflect" and lesson.text and lesson.source_episode_ids == [answer.json()["episode_id"]]
    assert 0 < lesson.tokens <= 48 and lesson.cost_tokens > lesson.tokens
    assert reflection_tokens(proxy) == lesson.cost_tokens == sum(c.total_tokens for c in costs)

    sent = record_backend_requests(proxy)
    headers, _ = ask(proxy, OTHER_NUMBERS, memory_mode="reflect")
    assert headers["x-speedup-reflection"] == lesson.id
    system = sent[0]["messages"][0]
    assert system["role"] == "system" and system["content"].startswith(SYSTEM)
    assert LESSON_PREFIX + lesson.text in system["content"]

    headers, _ = ask(proxy, UNRELATED, max_tokens=12, memory_mode="reflect")
    assert "x-speedup-reflection" not in headers  # below the similarity floor nothing is injected
    assert LESSON_PREFIX not in str(sent[-1]["messages"])


def test_real_model_lessons_are_paid_only_for_recurring_questions(start_proxy: ProxyFactory, llama_url: str) -> None:
    proxy = start_proxy(llama_url, memory_modes={"default": "reflect_update", "reflection_max_tokens": 64})
    store = proxy.container.learning.reflections
    ask(proxy, PENCILS)
    proxy.settle(240)
    assert reflection_tokens(proxy) == 0  # a one-off question costs no lesson
    [seed] = store.list_reflections("local", lessons_only=False)
    assert seed.members == 1 and not seed.text

    ask(proxy, OTHER_NUMBERS)
    proxy.settle(240)
    [cluster] = store.list_reflections("local", lessons_only=False)
    assert cluster.id == seed.id and cluster.members == 2
    assert cluster.cost_tokens == reflection_tokens(proxy) > 0  # the second member paid for a lesson
    # What the lesson says, where it is injected and how it is rewritten depend on the model's words:
    # tests/test_reflections.py's fake-model tests pin those; this one pins what is paid for, and when.

    ask(proxy, THIRD_VARIANT)
    proxy.settle(240)
    [grown] = store.list_reflections("local", lessons_only=False)
    assert grown.id == cluster.id and grown.members == 3 and grown.cost_tokens > cluster.cost_tokens

    spent = reflection_tokens(proxy)
    ask(proxy, UNRELATED, max_tokens=12)
    proxy.settle(240)
    assert store.count(lessons_only=False) == 2 and reflection_tokens(proxy) == spent


# -- with a fake model (what the model says is scripted) ------------------------------------


def test_answers_failing_the_verifier_are_never_reused_and_distilled_into_one_lesson_per_cluster(
    start_proxy: ProxyFactory, fake_model: Callable[..., FakeModel]
) -> None:
    rule = "Subtract what is given away, then add what is bought."
    fake = fake_model(answer="Probably seven pencils.", lessons=[rule])  # no "Answer: <n>": fails the check
    modes = {"default": "multi_case_reflect", "verifier": {"kind": "regex", "pattern": r"Answer:\s*-?\d"}}
    proxy = start_proxy(fake.url, memory_modes=modes)
    store = proxy.container.learning.reflections
    ask(proxy, PENCILS)
    proxy.settle()
    [episode] = proxy.container.memory.list_episodes("local")
    assert episode.verifier == "fail" and not episode.usable
    assert store.count() == 0 and fake.lesson_calls == 0  # a one-off: no lesson yet

    headers, _ = ask(proxy, PENCILS)
    assert headers["x-speedup-tier"] == "cold"  # a failing answer is never reused
    proxy.settle()
    ask(proxy, OTHER_NUMBERS)
    proxy.settle()
    [lesson] = store.list_reflections("local")
    assert lesson.kind == "multi_case_reflect" and lesson.text == rule and lesson.members == 2
    prompt = fake.lesson_bodies[-1]["messages"][-1]["content"]
    assert PENCILS in prompt and OTHER_NUMBERS in prompt and "WRONG" in prompt  # several cases at once


def test_reflect_update_rewrites_the_one_lesson_of_its_cluster(
    start_proxy: ProxyFactory, fake_model: Callable[..., FakeModel]
) -> None:
    first, second = "Subtract the gifts first.", "Subtract the gifts, then add every pack."
    fake = fake_model(answer="Answer: 7", lessons=[first, second])
    proxy = start_proxy(fake.url, memory_modes={"default": "reflect_update"})
    store = proxy.container.learning.reflections
    for question in (PENCILS, OTHER_NUMBERS):
        ask(proxy, question)
        proxy.settle()
    [lesson] = store.list_reflections("local")
    assert lesson.text == first and lesson.revisions == 1

    headers, _ = ask(proxy, THIRD_VARIANT)
    assert headers["x-speedup-reflection"] == lesson.id
    assert LESSON_PREFIX + first in fake.chat_bodies[-1]["messages"][0]["content"]
    proxy.settle()
    [rewritten] = store.list_reflections("local", lessons_only=False)
    assert rewritten.id == lesson.id and rewritten.text == second and rewritten.revisions == 2
    rewrite_prompt = fake.lesson_bodies[-1]["messages"][-1]["content"]
    assert first in rewrite_prompt and THIRD_VARIANT in rewrite_prompt  # the old lesson and the new case

    ask(proxy, UNRELATED)
    proxy.settle()
    assert store.count(lessons_only=False) == 2 and store.count() == 1 and fake.lesson_calls == 2


# -- without a backend -----------------------------------------------------------------------


def test_lessons_are_short_general_sentences_never_a_copy_of_one_instance() -> None:
    long = "Subtract what is given away first. " * 40
    cut = clean_lesson(long, "length", max_tokens=20)
    assert cut.startswith("Subtract") and cut.endswith(".") and len(cut) <= 100
    listed = "**Rule:** Follow these steps:\n1. Subtract the gifts.\n2. Add the packs.\n3. Multiply the"
    assert clean_lesson(listed, "length", 80) == "Subtract the gifts. Add the packs."
    headed = "To solve it, follow these rules:\n1. **Find the start**: it is 20.\n2. **Take away the gifts**: then"
    assert clean_lesson(headed, "length", 80) == "Find the start. Take away the gifts."
    echo = "Mia has 20 pencils and gives 7 to Ann. The answer is 23."
    assert clean_lesson(echo, "stop", 80) == ""  # numbers re-solve one instance: no lesson
    # Seen from the 0.5B model in the modes replay: the prompt handed back, and one instance's names.
    case = ["James has tubes of purple paint and yellow paint. How many tubes does James have?"]
    parroted = (
        "This question is of the same type. In one or two sentences, give the general rule for answering "
        "this type of question. Identify the number of tubes of purple paint James has. Add the counts of each colour."
    )
    assert clean_lesson(parroted, "stop", 80, case) == (
        "Identify the number of tubes of purple paint the person has. Add the counts of each colour."
    )
    named = "Start with the pencils Sara has. Subtract the pencils Sara gives to Tom. The total is what is left."
    shown = ["Sara has 12 pencils and gives 5 to Tom.", "Sara has 12 - 5 = 7 pencils left."]
    assert clean_lesson(named, "stop", 80, shown) == (
        "Start with the pencils the person has. Subtract the pencils the person gives to the person. "
        "The total is what is left."
    )


def test_lesson_goes_after_the_system_prompt_or_becomes_one() -> None:
    body = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}]}
    injected = inject_lesson(body, "Add first.")
    assert injected["messages"][0]["content"] == "Be brief.\n\n" + LESSON_PREFIX + "Add first."
    assert body["messages"][0]["content"] == "Be brief."  # the client's body is not changed
    bare = inject_lesson({"messages": [{"role": "user", "content": "q"}]}, "Add first.")
    assert bare["messages"][0] == {"role": "system", "content": LESSON_PREFIX + "Add first."}


def test_memory_mode_precedence_is_request_then_tenant_then_model() -> None:
    modes = MemoryModes(
        default="none", tenants={"acme": "reflect"}, models={"qwen": "reflect_update"}, allow_request_override=True
    )
    assert modes.resolve("acme", "qwen", "exemplars") == "exemplars"
    assert modes.resolve("acme", "qwen") == "reflect"
    assert modes.resolve("globex", "qwen") == "reflect_update"
    assert modes.resolve("globex", "other") == "none"
    locked = MemoryModes(default="none", allow_request_override=False)
    assert locked.resolve("acme", "qwen", "exemplars") == "none"
