"""One command for the replay benchmark on real parts: llama.cpp + the default model, then the proxy.

    python -m bench.run_replay [--groups 10] [--out bench/results/replay.json]

Starts the embedded llama.cpp server, a proxy in front of it with fresh memory, and runs
bench.replay: the whole S0..S4 stream straight to the backend, then through the proxy.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import replay
from bench.procs import proxy
from proxy.config import Settings
from proxy.container import start_embedded_backend


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--out", default="bench/results/replay.json")
    args = parser.parse_args()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="speedup-replay-"))
    server, backend_url = start_embedded_backend(Settings())
    try:
        with proxy(backend_url, workdir) as proxy_url:
            return replay.main(
                [
                    "--direct-url", backend_url, "--proxy-url", proxy_url, "--groups", str(args.groups),
                    "--max-tokens", str(args.max_tokens), "--out", args.out, "--quiet",
                ]
            )  # fmt: skip
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
