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
from bench.replay import ANSWER_FORMAT
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
    parser.add_argument(
        "--prompt-cache",
        choices=["on", "off"],
        default="off",
        help="llama.cpp's prompt cache; on, one prompt's temperature-0 answers differ between calls",
    )
    parser.add_argument("--out", default="bench/results/replay.json")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="speedup-replay-"))
    env = {}
    if args.verifier == "answer-format":
        env["SPEEDUP_MEMORY_MODES__VERIFIER"] = json.dumps({"kind": "regex", "pattern": ANSWER_FORMAT})
    templates = [str(t) for t in solvable(PROBE_FILE)] if args.templates == "solvable" else []
    server, backend_url = start_embedded_backend(Settings())
    records: list[dict[str, Any]] = []
    try:
        for seed in args.seeds:
            seed_out = Path(args.out).with_suffix(f".seed{seed}.json")
            (workdir / f"seed{seed}").mkdir()
            with proxy(backend_url, workdir / f"seed{seed}", env=env) as proxy_url:
                replay.main(
                    [
                        "--direct-url", backend_url, "--proxy-url", proxy_url, "--groups", str(args.groups),
                        "--seed", str(seed), "--max-tokens", str(args.max_tokens), "--out", str(seed_out),
                        "--feedback", args.feedback, *(["--templates", *templates] if templates else []),
                        *(["--no-prompt-cache"] if args.prompt_cache == "off" else []),
                        *(["--quiet"] if args.quiet else []),
                    ]
                )  # fmt: skip
            saved = json.loads(seed_out.read_text(encoding="utf-8"))
            records += [r | {"seed": seed} for r in saved["records"]]
            seed_out.unlink()
    finally:
        server.stop()
    table = format_level_table(records)
    print(f"\nall seeds {args.seeds}:\n{table}")
    config = vars(args) | {
        "verifier_pattern": ANSWER_FORMAT if args.verifier != "none" else None,
        "system_prompt": replay.SYSTEM_PROMPT,
    }
    payload = {"config": config, "records": records, "summary": summarize_levels(records), "table": table}
    Path(args.out).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
