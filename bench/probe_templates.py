"""Which GSM-Symbolic templates can the backend's model solve at all?

    python -m bench.probe_templates [--backend-url URL] [--seeds 2] [--out bench/results/template_probe.json]

Asks each eligible template (`bench.replay_dataset.eligible_templates`) on probe instances drawn
with seeds that the replay stream never uses (straight to the backend, temperature 0, the replay's
system prompt), and records which were solved. `bench.run_replay --templates solvable` then builds
its stream from templates solved at least once: a replay of problems the model always fails
measures nothing but failure, for both arms alike. Without `--backend-url` it starts the embedded
llama.cpp server.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from random import Random
from typing import Any

from bench.replay import chat_messages, make_client
from bench.replay_dataset import DEFAULT_MAX_CHARS, eligible_templates, generate_instance, is_correct, valid_instance

DEFAULT_OUT = Path("bench/results/template_probe.json")
PROBE_SEED_BASE = 10_000_000  # the replay stream draws its seeds from Random(seed), never this range


def probe_instances(template: int, count: int, max_chars: int) -> list[tuple[str, str]]:
    rng = Random(PROBE_SEED_BASE + template)
    found: list[tuple[str, str]] = []
    for _ in range(200):
        example = generate_instance(template, PROBE_SEED_BASE + rng.randrange(10**6))
        gold = valid_instance(example, max_chars)
        if gold is not None:
            found.append((example["question"], gold))
        if len(found) == count:
            break
    return found


def solvable(path: Path = DEFAULT_OUT) -> list[int]:
    """Templates solved at least once in a saved probe."""
    saved = json.loads(path.read_text(encoding="utf-8"))
    return sorted(int(t) for t, runs in saved["templates"].items() if any(r["correct"] for r in runs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend-url")
    ap.add_argument("--seeds", type=int, default=2, help="probe instances per template")
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS)
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    server = None
    url = args.backend_url
    if url is None:
        from proxy.config import Settings
        from proxy.container import start_embedded_backend

        server, url = start_embedded_backend(Settings())
    client = make_client(url, timeout=600)
    results: dict[str, list[dict[str, Any]]] = {}
    started = time.time()
    try:
        templates = eligible_templates(args.max_chars)
        for i, template in enumerate(templates):
            runs = []
            for question, gold in probe_instances(template, args.seeds, args.max_chars):
                completion = client.chat.completions.create(
                    model=args.model,
                    messages=chat_messages(question),
                    temperature=0,
                    max_tokens=args.max_tokens,
                )
                text = completion.choices[0].message.content or ""
                runs.append(
                    {
                        "correct": is_correct(text, gold),
                        "finish_reason": completion.choices[0].finish_reason,
                        "completion_tokens": completion.usage.completion_tokens if completion.usage else None,
                    }
                )
            results[str(template)] = runs
            solved = sum(r["correct"] for r in runs)
            print(f"[{i + 1}/{len(templates)}] template {template}: {solved}/{len(runs)}", file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    seconds = time.time() - started
    payload = {"max_tokens": args.max_tokens, "seeds": args.seeds, "seconds": seconds, "templates": results}
    args.out.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    print(f"solved at least once: {len(solvable(args.out))}/{len(results)}: {solvable(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
