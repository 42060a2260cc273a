"""Feedback on served completions: bad answers stop being reused, corrections are, tenants stay apart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from memory_store.episode import Episode
from memory_store.local_store import LocalMemory
from proxy.learning.response_log import ResponseEntry, ResponseLog
from tests.conftest import ProxyFactory, RunningProxy
from tests.fake_model import FakeModel, fake_model_fixture  # noqa: F401 - provides `fake_model`

pytestmark = pytest.mark.timeout(600)

SYSTEM = "Answer with one short sentence."


def ask(proxy: RunningProxy, question: str, api_key: str = "unused", max_tokens: int = 32):
    raw = proxy.client(api_key=api_key).chat.completions.with_raw_response.create(
        model="qwen",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        temperature=0,
        max_tokens=max_tokens,
    )
    return raw.headers, raw.parse()


def feedback(proxy: RunningProxy, response_id: str, rating: str, api_key: str | None = "unused", **extra):
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {"response_id": response_id, "rating": rating, **extra}
    return httpx.post(proxy.url + "/v1/feedback", json=body, headers=headers, timeout=30)


# -- with the real backend -------------------------------------------------------------------


def test_reuse_rated_bad_demotes_its_source_and_is_never_reused_again(
    start_proxy: ProxyFactory, llama_url: str
) -> None:
    proxy = start_proxy(llama_url)
    question = "Ann has 4 pens and buys 5 more. How many pens does Ann have now?"
    ask(proxy, question)
    proxy.settle()
    headers, reused = ask(proxy, question)
    assert headers["x-speedup-tier"] == "reuse"
    source_id = headers["x-speedup-episodes"]

    answer = feedback(proxy, reused.id, "bad")
    assert answer.status_code == 200, answer.text
    assert answer.json()["episode_id"] == source_id and answer.json()["tier"] == "reuse"
    proxy.settle()
    assert proxy.container.memory.get("local", source_id).rating == "bad"

    headers, _ = ask(proxy, question)
    assert headers["x-speedup-tier"] == "cold"
    proxy.settle()  # the same answer again maps onto the bad episode: it must not come back to life
    headers, _ = ask(proxy, question)
    assert headers["x-speedup-tier"] == "cold"
    assert source_id not in headers["x-speedup-episodes"]


def test_correction_becomes_a_gold_episode_that_is_reused(start_proxy: ProxyFactory, llama_url: str) -> None:
    proxy = start_proxy(llama_url)
    question = "Bo has 6 cups and breaks 2 of them. How many cups does Bo have left?"
    _, first = ask(proxy, question)
    correction = "Bo breaks 2 of his 6 cups, so 6 - 2 = 4 cups are left."
    # Sent at once: the rating may arrive before the episode is written, and must not be lost.
    answer = feedback(proxy, first.id, "bad", correction=correction)
    assert answer.status_code == 200, answer.text
    gold_id = answer.json()["gold_episode_id"]
    proxy.settle()

    memory = proxy.container.memory
    assert memory.get("local", gold_id).rating == "gold"
    original = proxy.container.learning.responses.get("local", first.id).episode_id
    assert original is not None and memory.get("local", original).rating == "bad"

    headers, again = ask(proxy, question)
    assert headers["x-speedup-tier"] == "reuse"
    assert headers["x-speedup-episodes"] == gold_id
    assert again.choices[0].message.content == correction


def test_feedback_on_another_tenants_response_is_404(start_proxy: ProxyFactory, llama_url: str) -> None:
    proxy = start_proxy(llama_url, api_keys={"key-a": "acme", "key-b": "globex"})
    _, mine = ask(proxy, "Cy has 2 dogs and 3 cats. How many pets does Cy have?", api_key="key-a")
    proxy.settle()

    assert feedback(proxy, mine.id, "bad", api_key="key-b").status_code == 404
    assert feedback(proxy, mine.id, "bad", api_key=None).status_code == 401
    assert feedback(proxy, "chatcmpl-never-served", "bad", api_key="key-a").status_code == 404
    episode_id = proxy.container.learning.responses.get("acme", mine.id).episode_id
    assert proxy.container.memory.get("acme", episode_id).rating is None  # globex changed nothing

    answer = feedback(proxy, mine.id, "good", api_key="key-a")
    assert answer.status_code == 200 and answer.json()["status"] == "applied"
    assert proxy.container.memory.get("acme", episode_id).rating == "good"
    assert feedback(proxy, mine.id, "meh", api_key="key-a").status_code == 400


# -- with a fake model -----------------------------------------------------------------------


def test_answer_the_judge_rejects_is_not_reused_until_a_human_rates_it_good(
    start_proxy: ProxyFactory, fake_model: Callable[..., FakeModel]
) -> None:
    fake = fake_model(answer="Ann has 9 pens.", judge="no")
    proxy = start_proxy(fake.url, memory_modes={"verifier": {"kind": "judge"}})
    question = "Ann has 4 pens and buys 5 more. How many pens does Ann have now?"
    _, first = ask(proxy, question)
    proxy.settle()
    [episode] = proxy.container.memory.list_episodes("local")
    assert episode.verifier == "fail" and not episode.usable
    [judged] = fake.judge_bodies
    assert judged["max_tokens"] == 3 and question in judged["messages"][-1]["content"]
    assert proxy.container.learning.verifier_tokens["local"] == 60  # the judge's tokens are counted
    totals = httpx.get(proxy.url + "/v1/speedup/stats").json()["totals"]
    assert totals["reflection_tokens"] == 60  # ...and taken off the net savings with the lessons'

    headers, _ = ask(proxy, question)
    assert headers["x-speedup-tier"] == "cold"
    assert feedback(proxy, first.id, "good").status_code == 200
    headers, _ = ask(proxy, question)
    assert headers["x-speedup-tier"] == "reuse"  # a human rating overrides the judge


# -- without a backend -----------------------------------------------------------------------


def _entry(response_id: str) -> ResponseEntry:
    return ResponseEntry(
        response_id=response_id, tenant="t", tier="cold", scope="s", context_fingerprint="c", question="q"
    )


def test_rating_that_arrives_before_its_episode_is_not_lost(tmp_path: Path) -> None:
    log = ResponseLog(tmp_path / "responses.sqlite3")
    log.record(_entry("early"))
    assert log.set_rating("t", "early", "bad").episode_id is None  # not written yet: pending
    assert log.attach_episode("t", "early", "ep_1").rating == "bad"  # the writer sees the rating

    log.record(_entry("late"))
    assert log.attach_episode("t", "late", "ep_2").rating is None
    assert log.set_rating("t", "late", "bad").episode_id == "ep_2"  # feedback sees the episode
    assert log.set_rating("other", "late", "good") is None and log.get("other", "late") is None


def test_response_log_stays_bounded(tmp_path: Path) -> None:
    log = ResponseLog(tmp_path / "responses.sqlite3", max_entries=100)
    for i in range(300):
        entry = _entry(f"r{i}")
        entry.created_at = float(i)
        log.record(entry)
    log.prune()
    assert log.count() == 100
    assert log.get("t", "r299") is not None and log.get("t", "r0") is None


def test_bad_and_verifier_failed_episodes_are_never_found_for_reuse_or_exemplars(tmp_path: Path) -> None:
    memory = LocalMemory(tmp_path / "episodes.sqlite3", dim=4)
    vector = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)

    def episode(answer: str, **fields) -> Episode:
        return memory.add(
            Episode(tenant="t", scope="s", question="q", context_fingerprint="c", answer=answer, **fields), vector
        )

    episode("rated bad", rating="bad")
    episode("failed the verifier", verifier="fail")
    good = episode("rated good despite the verifier", verifier="fail", rating="good")
    gold = episode("a correction", rating="gold")
    plain = episode("unchecked")
    found = {n.episode.id for n in memory.search("t", "s", vector, 10)}
    assert found == {good.id, gold.id, plain.id}


def stream(proxy: RunningProxy, question: str) -> tuple[str, str]:
    """A streamed answer read to the end: (tier, response id)."""
    with proxy.client().chat.completions.with_streaming_response.create(
        model="qwen",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        temperature=0,
        max_tokens=48,
        stream=True,
    ) as response:
        tier = response.headers["x-speedup-tier"]
        ids = {chunk.id for chunk in response.parse() if chunk.id}
    [response_id] = ids
    return tier, response_id


def test_a_rating_of_a_streamed_answer_reaches_its_episode(start_proxy: ProxyFactory, llama_url: str) -> None:
    proxy = start_proxy(llama_url)
    cold_tier, cold_id = stream(proxy, "Ann has 4 pens and buys 5 more. How many pens does Ann have now?")
    assert cold_tier == "cold"
    # Rated the moment the stream ends, while the episode may still be linking up in the background.
    assert feedback(proxy, cold_id, "good").status_code == 200
    proxy.settle()
    guided_tier, guided_id = stream(proxy, "Tom has 7 pens and buys 2 more. How many pens does Tom have now?")
    assert guided_tier == "guided"
    assert feedback(proxy, guided_id, "bad").status_code == 200
    proxy.settle()
    responses, memory = proxy.container.learning.responses, proxy.container.memory
    for response_id, rating in ((cold_id, "good"), (guided_id, "bad")):
        entry = responses.get("local", response_id)
        assert entry is not None and entry.rating == rating and entry.episode_id is not None
        assert memory.get("local", entry.episode_id).rating == rating
