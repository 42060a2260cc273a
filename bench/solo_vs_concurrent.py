"""Is a sample drawn alone surer of itself than one drawn beside others? (the gate's first sample)

    python -m bench.solo_vs_concurrent [--seed 8] [--questions 4] [--draws 4]

The confident-sample gate draws a vote's first sample alone; its threshold was calibrated on the
fixed method's samples, drawn 8 at a time. This draws each cold replay question `--draws` times
concurrently and as many times one after the other, straight to the embedded llama.cpp server, and
prints each sample's mean token log-probability.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from bench import replay
from bench.compute_replay import trace_confidence
from bench.probe_templates import DEFAULT_OUT as PROBE_FILE
from bench.probe_templates import solvable
from bench.replay_dataset import build_replay_stream
from proxy.config import Settings
from proxy.container import start_embedded_backend


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--gate", type=float, default=-0.085)
    args = parser.parse_args(argv)
    stream = build_replay_stream(groups=6, seed=args.seed, templates=solvable(PROBE_FILE))
    items = [item for item in stream if item.level in ("S0", "S4")][: args.questions]
    server, url = start_embedded_backend(Settings())
    client = replay.make_client(url)

    def mean_logprob(question: str) -> float:
        completion = client.chat.completions.create(
            model="qwen",
            messages=replay.chat_messages(question),
            temperature=0.3,
            max_tokens=400,
            logprobs=True,
        )
        trace = trace_confidence(completion.choices[0].logprobs)
        return trace["mean"] if trace else float("nan")

    together: list[float] = []
    alone: list[float] = []
    try:
        for item in items:
            with ThreadPoolExecutor(args.draws) as pool:
                batch = list(pool.map(mean_logprob, [item.question] * args.draws))
            solo = [mean_logprob(item.question) for _ in range(args.draws)]
            together += batch
            alone += solo
            print(f"{item.level} concurrent {[round(x, 3) for x in batch]} alone {[round(x, 3) for x in solo]}")
    finally:
        server.stop()
    for name, values in (("concurrent", together), ("alone", alone)):
        passed = sum(value >= args.gate for value in values)
        print(f"{name:>10}: mean {sum(values) / len(values):.3f}, {passed} of {len(values)} past the gate {args.gate}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
