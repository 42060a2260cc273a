"""What the proxy keeps in RAM per huge question, per episode and per scope.

A real proxy process (`proxy.cli serve`) in front of the stub backend; its RSS is read from
/proc/PID/status before and after each load:

* huge: distinct questions of 1.5 MB each (under the 2 MB body limit), capacity 50 a tenant;
* scopes: one question asked with a distinct `seed` each time (a scope each), capacity 50 a
  tenant, so all but 50 are evicted: what is left is what an evicted scope leaks (the question
  is the same, so the embedding cache, bounded on its own, does not grow); the control sends
  the same requests in one scope: what every request costs anyway (SQLite page caches filling
  as the response log grows, allocator noise);
* episodes: ordinary questions kept (no capacity), all in one scope, then each in its own
  scope: RAM per live episode and per live scope.

    .venv/bin/python -m bench.memory_bounds                      # the documented run
    .venv/bin/python -m bench.memory_bounds --huge 10 --scopes 2000 --episodes 1000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.procs import process, stub_backend
from tests.conftest import free_port

HUGE_CHARS = 1_500_000
CAPACITY = 50
MB = 1024 * 1024
_WORDS = (
    "alpha bravo cluster deploy engine filter gateway harbor index journal kernel ledger metric node "
    "order packet query replica shard token update vector worker yield zone"
).split()


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def huge_question(index: int, chars: int = HUGE_CHARS) -> str:
    """A distinct question of `chars` characters: its own words from the first line on."""
    rng = random.Random(index)
    head = f"Question {index}: summarise this log of {rng.choice(_WORDS)} events.\n"
    words = " ".join(rng.choices(_WORDS, k=chars // 6 + 1))
    return (head + words)[:chars]


def ordinary_question(index: int) -> str:
    rng = random.Random(index)
    return f"How do I configure the {rng.choice(_WORDS)} {rng.choice(_WORDS)} of service number {index}?"


SCOPE_QUESTION = "What is the capital of France?"


def ask(client: httpx.Client, base_url: str, question: str, seed: int | None = None) -> None:
    body: dict[str, Any] = {"model": "stub", "messages": [{"role": "user", "content": question}]}
    if seed is not None:
        body["seed"] = seed
    response = client.post(f"{base_url}/chat/completions", json=body, timeout=120)
    response.raise_for_status()


def ask_many(base_url: str, requests: list[tuple[str, int | None]], workers: int = 4) -> None:
    """Send (question, seed) pairs, `workers` at a time."""
    with httpx.Client() as client, ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda item: ask(client, base_url, *item), requests))  # list(): raise the first failure


def settle(rss: Callable[[], int], quiet_s: float = 1.0, timeout_s: float = 30.0) -> int:
    """RSS once background work is done: it has not moved by more than 1 MB for `quiet_s`."""
    deadline = time.monotonic() + timeout_s
    last = rss()
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = rss()
        if abs(now - last) < MB:
            return now
        last = now
    return last


def measure_huge(base_url: str, rss: Callable[[], int], count: int, chars: int = HUGE_CHARS) -> dict[str, float]:
    """RSS growth over `count` distinct huge questions, asked one at a time."""
    ask_many(base_url, [(ordinary_question(i), None) for i in range(8)], workers=1)  # warm every code path
    before = settle(rss)
    peak = before
    with httpx.Client() as client:
        for index in range(count):
            ask(client, base_url, huge_question(index, chars))
            peak = max(peak, rss())
    after = settle(rss)
    return {
        "questions": count,
        "question_mb": chars / 1e6,
        "rss_before_mb": before / MB,
        "rss_after_mb": after / MB,
        "rss_peak_mb": peak / MB,
        "growth_mb": (after - before) / MB,
        "growth_per_question_kb": (after - before) / count / 1024,
    }


def measure_scopes(
    base_url: str, rss: Callable[[], int], count: int, distinct: bool = True, warmup: int = 4 * CAPACITY
) -> dict[str, float]:
    """RSS growth over `count` requests, each in a scope of its own (a new `seed`) once the capacity
    evicts them; `distinct=False` is the control: the same requests all in one scope."""
    seeds = range(warmup + count) if distinct else [0] * (warmup + count)
    ask_many(base_url, [(SCOPE_QUESTION, seed) for seed in seeds[:warmup]])  # memory full: steady eviction
    before = settle(rss)
    ask_many(base_url, [(SCOPE_QUESTION, seed) for seed in seeds[warmup:]])
    after = settle(rss)
    return {
        "requests": count,
        "scopes": count if distinct else 1,
        "rss_before_mb": before / MB,
        "rss_after_mb": after / MB,
        "growth_mb": (after - before) / MB,
        "growth_per_request_b": (after - before) / count,
    }


def measure_episodes(base_url: str, rss: Callable[[], int], count: int, own_scopes: bool) -> dict[str, float]:
    """RSS growth over `count` kept episodes, in one scope or each in its own."""
    offset = 10_000_000 if own_scopes else 0  # no question of the other run repeats
    ask_many(base_url, [(ordinary_question(-1 - i), None) for i in range(8)])
    before = settle(rss)
    questions = [(ordinary_question(offset + i), (offset + i) if own_scopes else None) for i in range(count)]
    ask_many(base_url, questions)
    after = settle(rss)
    return {
        "episodes": count,
        "rss_before_mb": before / MB,
        "rss_after_mb": after / MB,
        "growth_per_episode_b": (after - before) / count,
    }


@contextlib.contextmanager
def proxy_process(backend_url: str, workdir: Path, capacity: int | None) -> Iterator[tuple[str, int]]:
    """A proxy process with local memory in `workdir`: yields its base URL and pid."""
    port = free_port()
    env = {} if capacity is None else {"SPEEDUP_LIMITS__CAPACITY_PER_TENANT": str(capacity)}
    args = [
        sys.executable, "-m", "proxy.cli", "serve", "--backend-url", backend_url, "--port", str(port),
        "--data-dir", str(workdir / "memory"), "--log-level", "warning",
    ]  # fmt: skip
    with process(args, f"http://127.0.0.1:{port}/healthz", workdir / "proxy.log", env) as child:
        yield f"http://127.0.0.1:{port}/v1", child.pid


def run(huge: int, scopes: int, episodes: int, chars: int = HUGE_CHARS) -> dict[str, Any]:
    results: dict[str, Any] = {"load_before": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="memory-bounds-") as tmp:
        root = Path(tmp)
        with stub_backend(root) as backend:
            runs: list[tuple[str, int, int | None, Callable[[str, Callable[[], int]], dict[str, float]]]] = [
                ("huge", huge, CAPACITY, lambda url, rss: measure_huge(url, rss, huge, chars)),
                ("scopes", scopes, CAPACITY, lambda url, rss: measure_scopes(url, rss, scopes)),
                ("scopes_control", scopes, CAPACITY, lambda url, rss: measure_scopes(url, rss, scopes, False)),
                ("episodes_one_scope", episodes, None, lambda url, rss: measure_episodes(url, rss, episodes, False)),
                ("episodes_own_scopes", episodes, None, lambda url, rss: measure_episodes(url, rss, episodes, True)),
            ]
            for name, count, capacity, measure in runs:
                if not count:
                    continue
                workdir = root / name
                workdir.mkdir()
                with proxy_process(backend, workdir, capacity) as (url, pid):
                    results[name] = measure(url, lambda pid=pid: rss_bytes(pid))
                print(name, json.dumps(results[name]), flush=True)
    results["load_after"] = os.getloadavg()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--huge", type=int, default=30, help="huge questions to send")
    parser.add_argument("--huge-chars", type=int, default=HUGE_CHARS)
    parser.add_argument("--scopes", type=int, default=8000, help="distinct scopes to send")
    parser.add_argument("--episodes", type=int, default=2000, help="episodes to keep, per layout")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    results = run(args.huge, args.scopes, args.episodes, args.huge_chars)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
