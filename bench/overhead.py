"""Proxy-added latency against a fast stub backend, at concurrency 1 and 32.

    python -m bench.overhead [--requests 2000] [--distinct 1500]

Every request carries a question the proxy has not embedded before (the worst case: a
real embedding and a FAISS search each time), over a memory pre-filled with episodes.
Proxy-added latency is read from each response's Server-Timing header (`proxy;dur=`:
the proxy's wall time minus the time it waited on the backend), and cross-checked
against client-side latency through the proxy minus straight to the stub.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.procs import proxy, stub_backend

_TEMPLATES = [
    "{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?",
    "A shop sells {item} at ${a} each. {name} buys {b}. How much does {name} pay?",
    "How do I change the delivery address for order {a}{b}?",
    "{name} reads {a} pages a day for {b} days. How many pages is that?",
    "My {item} order #{a}{b} arrived damaged. Can I get a refund?",
]
_NAMES = ["Ann", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal", "Ivy", "Jo"]
_ITEMS = ["apples", "pens", "books", "lamps", "socks", "mugs"]


def questions(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    seen: set[str] = set()
    while len(seen) < count:
        seen.add(
            rng.choice(_TEMPLATES).format(
                name=rng.choice(_NAMES), item=rng.choice(_ITEMS), a=rng.randint(1, 999), b=rng.randint(1, 999)
            )
        )
    return sorted(seen)


_TIMING = re.compile(r"proxy;dur=([\d.]+)")


async def drive(
    base_url: str, prompts: list[str], concurrency: int, stagger_s: float = 0.0
) -> tuple[list[float], list[float]]:
    """Client latencies and server-reported proxy-added latencies, in ms.

    `stagger_s` spreads the workers' first requests over that time, as clients of a busy service
    arrive; without it all of them send their first question in the same millisecond.
    """
    queue = list(prompts)
    client_ms: list[float] = []
    added_ms: list[float] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=64)) as client:

        async def worker(index: int) -> None:
            await asyncio.sleep(stagger_s * index / concurrency)
            while queue:
                prompt = queue.pop()
                body = {"model": "stub", "messages": [{"role": "user", "content": prompt}], "temperature": 0.7}
                started = time.perf_counter()
                response = await client.post("/chat/completions", json=body)
                client_ms.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
                match = _TIMING.search(response.headers.get("server-timing", ""))
                if match:
                    added_ms.append(float(match.group(1)))

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return client_ms, added_ms


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="measured requests per concurrency level")
    parser.add_argument("--prefill", type=int, default=500, help="episodes learned before measuring")
    parser.add_argument(
        "--repeat-share",
        type=float,
        default=0.0,
        help="share of measured requests that repeat a prefilled question word for word (a support bot's mix)",
    )
    parser.add_argument(
        "--backend-delay-ms",
        type=float,
        default=0.0,
        help="the stub's answer time; 0 makes concurrency 32 a CPU-saturation test (see docs/BENCHMARKS.md)",
    )
    parser.add_argument("--backend-jitter", type=float, default=0.0, help="answer time varies by +-this fraction")
    parser.add_argument("--c1-requests", type=int, help="measured requests at concurrency 1 (default: --requests)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="speedup-overhead-"))
    pool = questions(args.prefill + 2 * args.requests + 200, seed=1)
    prefill, pool = pool[: args.prefill], pool[args.prefill :]
    rows = []
    delay_s = args.backend_delay_ms / 1000
    with stub_backend(workdir, delay_s, args.backend_jitter) as stub_url, proxy(stub_url, workdir) as proxy_url:
        asyncio.run(drive(proxy_url, prefill, 8))
        time.sleep(1.0)
        for concurrency in args.concurrency:
            requests = args.c1_requests or args.requests if concurrency == 1 else args.requests
            fresh = round(requests * (1 - args.repeat_share))
            batch, pool = pool[:fresh], pool[fresh:]
            rng = random.Random(concurrency)
            batch += [rng.choice(prefill) for _ in range(requests - fresh)]
            rng.shuffle(batch)
            direct_ms, _ = asyncio.run(drive(stub_url, batch, concurrency, delay_s))
            via_ms, added_ms = asyncio.run(drive(proxy_url, batch, concurrency, delay_s))
            rows.append(
                (
                    concurrency,
                    len(added_ms),
                    pct(added_ms, 50),
                    pct(added_ms, 99),
                    pct(direct_ms, 50),
                    pct(direct_ms, 99),
                    pct(via_ms, 50),
                    pct(via_ms, 99),
                    statistics.mean(via_ms) - statistics.mean(direct_ms),
                )
            )
    share = f"{args.repeat_share:.0%} of measured questions repeat a prefilled one word for word"
    backend = f"stub answers in {args.backend_delay_ms:g} ms" + (
        f" +-{args.backend_jitter:.0%}" if args.backend_jitter else ""
    )
    print(f"prefilled episodes: {args.prefill}; {share}; {backend}; temperature 0.7: every request reaches the backend")
    print(
        "| concurrency | requests | proxy-added p50 ms | proxy-added p99 ms | direct p50 ms | direct p99 ms "
        "| via proxy p50 ms | via proxy p99 ms | mean client delta ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |".format(*row))


if __name__ == "__main__":
    main()
