"""One command for the replay benchmark on real parts: llama.cpp + the default model, then the proxy.

    python -m bench.run_replay [--groups 5] [--seeds 0 1] [--templates solvable] [--feedback none] \\
        [--out bench/results/replay.json]

Starts the embedded llama.cpp server and, per stream seed, a proxy in front of it with fresh memory,
and runs bench.replay: the whole S0..S4 stream straight to the backend, then through the proxy. The
seeds' records are merged into one table (each seed draws other templates into the groups and
other instances), so a small pool of solvable templates still gives enough groups.
`--templates solvable` builds the stream from the templates in bench/results/template_probe.json
that the model solved at least once (`python -m bench.probe_templates` writes it).
The proxy's quality gate keeps only answers that state a final number ("Answer: 42", "\\boxed{42}":
a regex verifier, `memory_modes.verifier`); `--verifier none` turns it off.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from bench import replay
from bench.probe_templates import DEFAULT_OUT as PROBE_FILE
from bench.probe_templates import solvable
from bench.procs import proxy
from bench.replay_dataset import build_replay_stream
from bench.report import format_level_table, summarize_levels
from proxy.config import Settings
from proxy.container import start_embedded_backend


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--templates", choices=["all", "solvable"], default="solvable")
    parser.add_argument("--feedback", choices=["none", "oracle"], default="none")
    parser.add_argument("--verifier", choices=["none", "answer-format"], default="answer-format")
    replay.add_prompt_cache_option(parser, default="off")
    parser.add_argument("--out", default="bench/results/replay.json")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="speedup-replay-"))
    env = {}
    if args.verifier == "answer-format":
        env["SPEEDUP_MEMORY_MODES__VERIFIER"] = json.dumps({"kind": "regex", "pattern": replay.ANSWER_FORMAT})
    templates = solvable(PROBE_FILE) if args.templates == "solvable" else None
    extra_body = replay.prompt_cache_body(args.prompt_cache)
    server, backend_url = start_embedded_backend(Settings())
    records: list[dict[str, Any]] = []
    try:
        for seed in args.seeds:
            items = build_replay_stream(groups=args.groups, seed=seed, templates=templates)
            (workdir / f"seed{seed}").mkdir()
            with proxy(backend_url, workdir / f"seed{seed}", env=env) as proxy_url:
                for pass_name, url in (("direct", backend_url), ("proxy", proxy_url)):
                    passed = replay.run_pass(
                        replay.make_client(url),
                        items,
                        pass_name=pass_name,
                        max_tokens=args.max_tokens,
                        verbose=not args.quiet,
                        feedback=args.feedback == "oracle",
                        extra_body=extra_body,
                    )
                    records += [r | {"seed": seed} for r in passed]
            print(f"\nseed {seed}:\n{format_level_table([r for r in records if r['seed'] == seed])}")
    finally:
        server.stop()
    table = format_level_table(records)
    print(f"\nall seeds {args.seeds}:\n{table}")
    config = vars(args) | {
        "verifier_pattern": replay.ANSWER_FORMAT if args.verifier != "none" else None,
        "system_prompt": replay.SYSTEM_PROMPT,
    }
    payload = {"config": config, "records": records, "summary": summarize_levels(records), "table": table}
    Path(args.out).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
