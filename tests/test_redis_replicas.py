"""Proxy replicas sharing one Redis memory, end to end through the official OpenAI SDK.

Real proxies (real MiniLM encoder), a real redis-server per test and the stub backend
(the model's text does not matter here). A replica that must die by kill -9 runs as a
subprocess (`python -m proxy.cli serve`); the others run in this process.
"""

# ruff: noqa: F811 - test functions take the imported `redis_server` fixture as a parameter

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from bench.stub_backend import create_stub_app
from memory_store.redis.keys import RedisKeys
from tests.conftest import ProxyFactory, RunningProxy, ServerThread, free_port, stub_url
from tests.redis_fixtures import RedisProcess, redis_server  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stub() -> Iterator[str]:
    server = ServerThread(create_stub_app()).start()
    yield stub_url(server)
    server.stop()


def ask(proxy_url: str, question: str, api_key: str = "unused") -> tuple[str, str]:
    """One chat completion (temperature 0, so reuse is allowed): (tier header, answer)."""
    client = openai.OpenAI(base_url=proxy_url + "/v1", api_key=api_key, max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(
        model="stub", messages=[{"role": "user", "content": question}], temperature=0
    )
    return raw.headers["x-speedup-tier"], raw.parse().choices[0].message.content or ""


def question(i: int) -> str:
    return f"Ticket {1000 + i}: how many boxes of {i + 3} apples make {(i + 3) * (i + 7)} apples?"


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> float:
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.005)
    return time.perf_counter() - started


def replica(start_proxy: ProxyFactory, backend: str, redis_url: str, tmp_path: Path, name: str, **kw: Any) -> Any:
    return start_proxy(backend, data_dir=tmp_path / name, memory=redis_url, redis={"replica_id": name}, **kw)


def test_an_answer_learned_on_one_replica_is_reused_by_another_within_a_second(
    redis_server: RedisProcess, stub: str, start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    a = replica(start_proxy, stub, redis_server.url, tmp_path, "a")
    b = replica(start_proxy, stub, redis_server.url, tmp_path, "b")
    latencies = []
    for i in range(5):
        tier, answer = ask(a.url, question(i))
        assert tier in ("cold", "guided")  # learned here, not reused
        # From A's answer to B holding the episode: A's background write, the feed, B's mirror.
        latencies.append(wait_for(lambda i=i: b.container.memory.count("local") == i + 1, timeout_s=1.0))
        a.settle()
        tier, reused = ask(b.url, question(i))
        assert (tier, reused) == ("reuse", answer)
    assert max(latencies) < 1.0
    print(f"cross-replica visibility: {', '.join(f'{t * 1000:.1f}' for t in latencies)} ms")


def test_redis_outage_never_fails_a_request(
    redis_server: RedisProcess, stub: str, start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    replicas = [replica(start_proxy, stub, redis_server.url, tmp_path, name) for name in ("a", "b")]
    total = 30
    done = [0, 0]
    errors: list[BaseException] = []

    def traffic(index: int) -> None:
        for i in range(total):  # both replicas are asked every question: duplicates must collapse
            try:
                ask(replicas[index].url, question(i))
            except Exception as error:  # noqa: BLE001 - every failure is a test failure, counted below
                errors.append(error)
            done[index] = i + 1
            time.sleep(0.03)

    threads = [threading.Thread(target=traffic, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    wait_for(lambda: min(done) >= 10, timeout_s=60)
    redis_server.kill()  # kill -9: mid-traffic, no goodbye
    wait_for(lambda: min(done) >= 20, timeout_s=60)
    health = httpx.get(replicas[0].url + "/healthz").json()
    metrics = httpx.get(replicas[0].url + "/metrics").text
    redis_server.start()  # same port, same AOF dir
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert health["status"] == "degraded" and health["memory"]["degraded"] is True
    assert health["memory"]["spool_depth"] > 0
    assert "speedup_memory_degraded 1.0" in metrics
    for proxy in replicas:
        proxy.settle()
        memory = proxy.container.memory
        wait_for(lambda m=memory: not m.health()["degraded"] and m.health()["spool_depth"] == 0, timeout_s=15)
    client = redis_server.client()
    # Exactly once: one episode, and one feed entry announcing it, per distinct question.
    assert client.zcard(RedisKeys("speedup").ids("local")) == total
    adds = [fields for _, fields in client.xrange("speedup:feed") if fields[b"op"] == b"add"]
    assert len(adds) == total
    for proxy in replicas:
        wait_for(lambda p=proxy: p.container.memory.count("local") == total, timeout_s=2)


def test_a_tenant_delete_reaches_every_replica(
    redis_server: RedisProcess, stub: str, start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    keys = {"key-acme": "acme", "key-globex": "globex"}
    a = replica(start_proxy, stub, redis_server.url, tmp_path, "a", api_keys=keys)
    b = replica(start_proxy, stub, redis_server.url, tmp_path, "b", api_keys=keys)
    for i in range(2):
        ask(a.url, question(i), api_key="key-acme")
        ask(a.url, question(i), api_key="key-globex")
    a.settle()
    wait_for(lambda: b.container.memory.count("acme") == 2 and b.container.memory.count("globex") == 2)
    assert ask(b.url, question(0), api_key="key-acme")[0] == "reuse"

    assert a.container.memory.delete_tenant("acme") == 2
    wait_for(lambda: b.container.memory.count("acme") == 0, timeout_s=1.0)
    memory_keys = [
        k for k in redis_server.client().scan_iter(match=RedisKeys("speedup").tenant_pattern("acme"))
        if k.endswith((b":ck", b":ids", b":score")) or b":ep:" in k
    ]  # fmt: skip
    assert memory_keys == []  # (other parts, such as stats, may keep keys under the tenant's prefix)
    b.settle()
    assert ask(b.url, question(1), api_key="key-acme")[0] == "cold"  # forgotten everywhere
    assert ask(b.url, question(1), api_key="key-globex")[0] == "reuse"  # the other tenant untouched


def stored_questions(redis_server: RedisProcess) -> set[str]:
    client = redis_server.client()
    keys = RedisKeys("speedup")
    ids = client.zrange(keys.ids("local"), 0, -1)
    bodies = [client.hget(keys.episode("local", i.decode()), "body") for i in ids]
    return {json.loads(body)["question"] for body in bodies if body}


class SubprocessReplica:
    """`python -m proxy.cli serve` as a child process, so that it can be killed with SIGKILL."""

    def __init__(self, redis_url: str, backend: str, data_dir: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            sys.executable, "-m", "proxy.cli", "serve",
            "--memory", redis_url,
            "--backend-url", backend,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--data-dir", str(data_dir),
            "--log-level", "warning",
        ]  # fmt: skip
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SPEEDUP_REDIS__REPLICA_ID": name,
            "SPEEDUP_MEMORY_DEADLINE_MS": "5000",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SubprocessReplica:
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL)
        deadline = time.time() + 90
        while time.time() < deadline:
            assert self.proc.poll() is None, "replica exited during start"
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("replica did not start")

    def health(self) -> dict[str, Any]:
        return httpx.get(self.url + "/healthz", timeout=5).json()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def test_a_replica_killed_mid_traffic_loses_nothing(
    redis_server: RedisProcess, stub: str, start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    a: RunningProxy = replica(start_proxy, stub, redis_server.url, tmp_path, "a")
    b = SubprocessReplica(redis_server.url, stub, tmp_path / "b", "b").start()
    answered_by_b: dict[int, float] = {}  # question -> when B's answer arrived
    failovers: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def traffic() -> None:
        # A load balancer in miniature: B first, A when B does not answer (nginx proxy_next_upstream).
        i = 0
        while not stop.is_set() and i < 5000:
            try:
                ask(b.url, question(i))
                answered_by_b[i] = time.time()
            except openai.APIConnectionError:
                failovers.append(i)
                try:
                    ask(a.url, question(i))
                except Exception as error:  # noqa: BLE001
                    errors.append(error)
                time.sleep(0.1)
            i += 1
            time.sleep(0.02)

    try:
        thread = threading.Thread(target=traffic)
        thread.start()
        wait_for(lambda: len(answered_by_b) >= 10, timeout_s=60)
        b.kill()
        killed_at = time.time()
        wait_for(lambda: len(failovers) >= 5, timeout_s=60)  # A learns on while B is dead
        restarted = time.perf_counter()
        b.start()  # same data dir, same replica id
        print(f"replica restart took {time.perf_counter() - restarted:.1f} s")
        before = len(answered_by_b)
        wait_for(lambda: len(answered_by_b) >= before + 5, timeout_s=60)
        stop.set()
        thread.join(timeout=60)
        a.settle()
        assert errors == []
        questions = stored_questions(redis_server)
        # Only a write still in flight at the kill (answer sent, episode not yet written) may be lost.
        durable = {i for i, at in answered_by_b.items() if at < killed_at - 0.5 or at > killed_at}
        durable |= set(failovers)
        assert {question(i) for i in durable} <= questions
        wait_for(lambda: b.health()["memory"]["episodes"] == len(questions), timeout_s=5)
        assert b.health()["memory"]["degraded"] is False
        for i in sorted(durable)[:: max(1, len(durable) // 8)]:  # the restarted B reuses all of them
            assert ask(b.url, question(i))[0] == "reuse", i
    finally:
        stop.set()
        b.kill()
