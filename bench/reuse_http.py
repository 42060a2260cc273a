"""The reuse decision end to end: the labelled pairs through the HTTP API and the official openai SDK.

    python -m bench.reuse_http [--split heldout] [--day-requests 2000]

A proxy (in process, real MiniLM and FAISS, local memory in a temporary directory) in front of
an echo backend whose answer names the question it answers, so every answer served from memory
can be checked against the question asked:
- **pairs**: each pair in a scope of its own (a system prompt of its own): `a` asked, then `b`;
  served = `b` answered from memory (tier header `reuse`).
- **a support bot's day**: one scope; popular questions asked again and again, their rewordings
  and typos, and later the look-alikes of other questions. A reuse is wrong when the stored
  question it came from and the one asked form a labelled trap pair; right when they are the same
  text or labelled the same question (hit pairs joined transitively); the rest are listed for
  reading. Reported as a share of all requests.
- the proxy's own time on reuse responses (`Server-Timing: proxy;dur=`), p50 and p99.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
from fastapi import FastAPI, Request

from bench.reuse_eval import RESULTS, SPLITS, Pair, load_pairs

ANSWER_PREFIX = "ANSWER FOR: "


def echo_backend() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        question = body["messages"][-1]["content"]
        message = {"role": "assistant", "content": ANSWER_PREFIX + question}
        return {
            "id": f"chatcmpl-{time.monotonic_ns()}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 20, "total_tokens": 40},
        }

    return app


def start_proxy(backend_url: str, data_dir: Path, verifier_url: str | None = None) -> tuple[Any, str]:
    from proxy.app import create_app
    from proxy.config import load_settings
    from proxy.container import build_container
    from tests.conftest import ServerThread

    flags: dict[str, Any] = {"backend_url": backend_url, "data_dir": str(data_dir), "memory_deadline_ms": 5000}
    if verifier_url is not None:
        flags["reuse_verifier"] = {"enabled": True, "url": verifier_url}
    container = build_container(load_settings(flags=flags, environ={}))
    server = ServerThread(create_app(container), lifespan="on").start()
    return server, f"http://127.0.0.1:{server.port}/v1"


def ask(client: openai.OpenAI, system: str, messages: list[dict[str, str]]) -> tuple[str, str, float]:
    """(tier, answer, proxy ms)."""
    raw = client.chat.completions.with_raw_response.create(
        model="echo",
        messages=[{"role": "system", "content": system}, *messages],  # type: ignore[list-item]
        temperature=0,
    )
    timing = raw.headers.get("server-timing", "proxy;dur=0")
    proxy_ms = float(timing.split("proxy;dur=")[1].split(",")[0])
    return raw.headers["x-speedup-tier"], raw.parse().choices[0].message.content or "", proxy_ms


def run_pairs(client: openai.OpenAI, pairs: list[Pair], settle: Any) -> dict[str, Any]:
    served: dict[str, list[bool]] = defaultdict(list)
    reuse_ms: list[float] = []
    for number, pair in enumerate(pairs):
        system = f"Support scope {number}."
        ask(client, system, pair.a)
        settle()
        tier, _, proxy_ms = ask(client, system, pair.b)
        served[f"{pair.kind}:{pair.label}:{pair.category}"].append(tier == "reuse")
        if tier == "reuse":
            reuse_ms.append(proxy_ms)
    report: dict[str, Any] = {"per_category": {}, "reuse_proxy_ms": percentiles(reuse_ms)}
    for kind in ("question", "conversation"):
        for label in ("hit", "trap"):
            results = [r for key, rs in served.items() if key.startswith(f"{kind}:{label}:") for r in rs]
            report[f"{kind}_{label}s_served"] = round(sum(results) / max(1, len(results)), 4)
    for key, results in sorted(served.items()):
        report["per_category"][key] = round(sum(results) / len(results), 4)
    return report


def day_stream(pairs: list[Pair], requests: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """(asked, role, family): popular questions early and often, their look-alikes later."""
    by_family: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        if pair.kind == "question":
            by_family[pair.a[-1]["content"]].append(pair)
    bases = list(by_family)
    rng.shuffle(bases)
    popular = bases[: max(10, len(bases) // 5)]
    stream: list[tuple[str, str, str]] = []
    weights = [1 / (rank + 1) for rank in range(len(popular))]  # Zipf-like popularity
    while len(stream) < requests:
        base = rng.choices(popular, weights)[0]
        variants = by_family[base]
        roll = rng.random()
        if roll < 0.6 or len(stream) < requests // 4:
            stream.append((base, "repeat", base))
        else:
            pair = rng.choice(variants)
            stream.append((pair.b[-1]["content"], pair.label, base))
    return stream


def same_question_classes(pairs: list[Pair]) -> dict[str, set[str]]:
    """Each question text -> every text labelled the same question (hit pairs joined transitively)."""
    classes: dict[str, set[str]] = {}
    for pair in pairs:
        if pair.kind == "question" and pair.hit:
            a, b = pair.a[-1]["content"].strip(), pair.b[-1]["content"].strip()
            joined = classes.get(a, {a}) | classes.get(b, {b})
            for text in joined:
                classes[text] = joined
    return classes


def run_day(client: openai.OpenAI, pairs: list[Pair], requests: int, settle: Any) -> dict[str, Any]:
    equivalent = same_question_classes(pairs)
    traps = {frozenset((p.a[-1]["content"].strip(), p.b[-1]["content"].strip())) for p in pairs if not p.hit}
    counts: dict[str, int] = defaultdict(int)
    unlabelled: list[tuple[str, str]] = []
    for number, (asked, role, _) in enumerate(day_stream(pairs, requests, random.Random(11))):
        tier, answer, _ = ask(client, "You are the support bot of Example Ltd.", [{"role": "user", "content": asked}])
        counts["requests"] += 1
        counts[f"{role}_requests"] += 1
        if tier == "reuse":
            source = answer.removeprefix(ANSWER_PREFIX).strip()
            counts["reused"] += 1
            counts[f"{role}_reused"] += 1
            if source == asked.strip() or source in equivalent.get(asked.strip(), ()):
                counts["right"] += 1
            elif frozenset((source, asked.strip())) in traps:
                counts["wrong"] += 1  # a labelled look-alike's answer
            else:
                counts["unlabelled"] += 1  # no label relates the two questions: listed for reading
                unlabelled.append((asked, source))
        if number % 50 == 49:
            settle()
    total = counts["requests"]
    return {
        **counts,
        "unlabelled_examples": sorted(set(unlabelled))[:30],
        "served_from_memory": round(counts["reused"] / total, 4),
        "wrong_share_of_all_requests": round(counts["wrong"] / total, 4),
    }


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": 0.0, "p99": 0.0, "n": 0}
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": round(pick(0.5), 3), "p99": round(pick(0.99), 3), "n": len(ordered)}


def settler(server: Any) -> Callable[[], None]:
    """Waits until the proxy's background work (episode writes) is done."""
    background = server.app.state.pipeline.background

    def settle() -> None:
        while background.pending:
            time.sleep(0.005)

    return settle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reuse_http", description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=SPLITS, default="heldout")
    parser.add_argument("--day-requests", type=int, default=2000)
    parser.add_argument("--verifier-url", default=None, help="with the reuse verifier at this URL (.../v1)")
    parser.add_argument("--day-only", action="store_true", help="only the support bot's day, not the isolated pairs")
    args = parser.parse_args(argv)
    from tests.conftest import ServerThread

    pairs = load_pairs(args.split)
    backend = ServerThread(echo_backend()).start()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        backend_url = f"http://127.0.0.1:{backend.port}/v1"
        report: dict[str, Any] = {"split": args.split, "verifier": args.verifier_url is not None}
        if not args.day_only:
            server, url = start_proxy(backend_url, Path(tmp) / "pairs", args.verifier_url)
            client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
            report["pairs"] = run_pairs(client, pairs, settler(server))
            server.stop(60)
        server, url = start_proxy(backend_url, Path(tmp) / "day", args.verifier_url)
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        report["day"] = run_day(client, pairs, args.day_requests, settler(server))
        server.stop(60)
    backend.stop()
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=1))
    RESULTS.mkdir(exist_ok=True)
    suffix = ("-verified" if args.verifier_url else "") + ("-day" if args.day_only else "")
    (RESULTS / f"reuse-http-{args.split}{suffix}.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
