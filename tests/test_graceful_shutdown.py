"""SIGTERM mid-traffic: every accepted request is answered, and nothing it left behind is lost.

A real `speedup-proxy serve` in front of the real llama.cpp, memory mode exemplars+reflect_update
(every new episode joins a cluster of similar questions; a cluster of two or more gets a lesson
written by the model, in the background). SIGTERM arrives while backend calls are running; after
the process exits and a new one starts on the same data directory, every episode, hit count,
lesson membership, feedback link and stats figure of an answered request must be there.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from memory_store.reflections import ReflectionStore
from proxy.learning.response_log import ResponseLog
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(900)

SYSTEM = "Solve the problem. End with 'Answer: <number>'."
SEEDS = [
    "Ann has 4 pens and buys 5 more. How many pens does Ann have now?",
    "A box holds 6 eggs. How many eggs are in 3 boxes?",
    "Tom reads 12 pages a day. How many pages does he read in 4 days?",
]
VARIANTS = [
    "Bo has 7 pens and buys 2 more. How many pens does Bo have now?",
    "A box holds 8 eggs. How many eggs are in 5 boxes?",
    "Mia reads 9 pages a day. How many pages does she read in 6 days?",
    "Sam has 11 pens and buys 6 more. How many pens does Sam have now?",
]
NEW = ["Name the capital city of Italy.", "What colour do you get by mixing blue and yellow?"]


@dataclass
class Answer:
    question: str
    stream: bool
    status: int = 0
    tier: str = ""
    episodes: str = ""
    response_id: str = ""
    content: str = ""
    finish: str | None = None
    error: str = ""


class Serve:
    """`speedup-proxy serve` as a child process, as an operator runs it."""

    def __init__(self, llama_url: str, data_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPEEDUP_")}
        env |= {
            "SPEEDUP_MEMORY_MODES__DEFAULT": "exemplars+reflect_update",
            "SPEEDUP_MEMORY_MODES__REFLECTION_MAX_TOKENS": "32",
            "SPEEDUP_MEMORY_DEADLINE_MS": "5000",
            "SPEEDUP_LIFECYCLE__REQUESTS_TIMEOUT_S": "240",
            "SPEEDUP_LIFECYCLE__BACKGROUND_TIMEOUT_S": "240",
        }
        command = [str(Path(sys.executable).parent / "speedup-proxy"), "serve", "--backend-url", llama_url]
        command += ["--data-dir", str(data_dir), "--port", str(self.port), "--log-level", "info"]
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.process.poll() is None, log_path.read_text()
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError("speedup-proxy serve did not start")

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=600)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 600) -> int:
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout_s)
        finally:
            self.log.close()


def ask(serve: Serve, answer: Answer) -> Answer:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": answer.question}]
    try:
        if answer.stream:
            with serve.client().chat.completions.with_streaming_response.create(
                model="qwen", messages=messages, temperature=0, max_tokens=64, stream=True
            ) as response:
                answer.status, answer.tier = response.status_code, response.headers["x-speedup-tier"]
                answer.episodes = response.headers["x-speedup-episodes"]
                for chunk in response.parse():
                    answer.response_id = chunk.id or answer.response_id
                    for choice in chunk.choices:
                        answer.content += choice.delta.content or ""
                        answer.finish = choice.finish_reason or answer.finish
            return answer
        raw = serve.client().chat.completions.with_raw_response.create(
            model="qwen", messages=messages, temperature=0, max_tokens=64
        )
        completion = raw.parse()
        answer.status, answer.tier = raw.status_code, raw.headers["x-speedup-tier"]
        answer.episodes, answer.response_id = raw.headers["x-speedup-episodes"], completion.id
        answer.content = completion.choices[0].message.content or ""
        answer.finish = completion.choices[0].finish_reason
    except Exception as error:  # noqa: BLE001 - the test asserts there were none
        answer.error = repr(error)
    return answer


def traffic() -> list[Answer]:
    repeats = [Answer(q, stream=False) for q in SEEDS]  # reuse: hit counts written in the background
    fresh = [Answer(q, stream=False) for q in VARIANTS[:3] + NEW]  # guided and cold: episodes, then lessons
    return repeats + fresh + [Answer(VARIANTS[3], stream=True)]


def test_sigterm_mid_traffic_answers_every_accepted_request_and_loses_nothing(llama_url: str, tmp_path: Path) -> None:
    data, log = tmp_path / "memory", tmp_path / "serve.log"
    serve = Serve(llama_url, data, log)
    seeded = [ask(serve, Answer(q, stream=False)) for q in SEEDS]
    assert all(a.status == 200 and a.tier == "cold" for a in seeded), seeded
    time.sleep(1.0)  # the seeds' episodes are written before their answers; their lessons may still run

    answers = traffic()
    threads = [threading.Thread(target=ask, args=(serve, a)) for a in answers]
    for thread in threads:
        thread.start()
    time.sleep(1.5)  # all are accepted: the reuses are answered, the backend calls are running
    in_flight = sum(thread.is_alive() for thread in threads)
    code = serve.stop()
    for thread in threads:
        thread.join(60)

    # Uvicorn re-raises the signal once it has shut down cleanly, so the exit status says "SIGTERM".
    assert code in (0, -signal.SIGTERM), log.read_text()[-3000:]
    assert "Application shutdown complete" in log.read_text()
    assert in_flight >= 3, "SIGTERM must arrive while requests are in flight, or the test proves nothing"
    drained = [int(n) for n in re.findall(r"shutdown: draining (\d+) background tasks", log.read_text())]
    assert drained and drained[0] >= 1, "background work must still be running at shutdown"
    for answer in answers:
        assert answer.error == "" and answer.status == 200, answer
        assert answer.content.strip() and answer.finish in ("stop", "length"), answer

    restarted = Serve(llama_url, data, log)
    try:
        check_nothing_was_lost(restarted, seeded, answers, data)
    finally:
        restarted.stop()


def check_nothing_was_lost(serve: Serve, seeded: list[Answer], answers: list[Answer], data: Path) -> None:
    episodes = httpx.get(serve.url + "/admin/tenants/local/episodes", params={"limit": 1000}, timeout=30).json()
    by_response = {e["response_id"]: e for e in episodes["episodes"]}
    by_id = {e["id"]: e for e in episodes["episodes"]}
    answered = seeded + answers
    stored = [a for a in answered if a.tier != "reuse" and a.finish == "stop"]
    assert stored, "some answers must have been kept"
    for answer in stored:
        assert answer.response_id in by_response, f"episode of {answer.question!r} lost"

    reuses = [a for a in answers if a.tier == "reuse"]
    assert len(reuses) == len(SEEDS)
    for answer in reuses:
        assert by_id[answer.episodes]["hits"] == 1, f"hit count of {answer.question!r} lost"

    responses = ResponseLog(data / "responses.sqlite3")
    reflections = ReflectionStore(data / "reflections.sqlite3", 384)
    try:
        for answer in answered:  # every answer can still be rated, and finds its episode
            entry = responses.get("local", answer.response_id)
            assert entry is not None, f"response {answer.question!r} not logged"
            expected = answer.episodes if answer.tier == "reuse" else by_response.get(answer.response_id, {}).get("id")
            assert entry.episode_id == expected, f"feedback link of {answer.question!r} lost"
        clusters = reflections.list_reflections("local", 1000, 0, lessons_only=False)
        members = {i for cluster in clusters for i in cluster.source_episode_ids}
        for answer in stored:  # every new episode was filed under its cluster, and clusters of 2+ paid for a lesson
            assert by_response[answer.response_id]["id"] in members, f"lesson work of {answer.question!r} lost"
        grown = [cluster for cluster in clusters if cluster.members >= 2]
        assert grown and all(r.cost_tokens > 0 for r in grown)
    finally:
        responses.close()
        reflections.close()

    totals: dict[str, Any] = httpx.get(serve.url + "/v1/speedup/stats", timeout=30).json()["totals"]
    assert totals["requests"]["total"] == len(answered), "stats of the last requests before SIGTERM lost"
