"""PNG charts of bench/compute_replay.py: completion tokens, samples or rounds, and accuracy per level.

python -m bench.compute_charts bench/results/compute-replay.json [more runs ...] [--out docs/img] [--suffix _heldout]

Several runs are pooled: their records summarised together (streams of other seeds, same passes).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.replay_dataset import LEVELS  # noqa: E402

METHODS = {
    "vote": (
        ("fixed8-direct", "#9ca3af"),
        ("vote-nomem", "#3b82f6"),
        ("vote-mem", "#0f9d58"),
    ),
    "refine": (
        ("refine3-fixed", "#9ca3af"),
        ("refine-nomem", "#3b82f6"),
        ("refine-mem", "#0f9d58"),
        ("refine-checker", "#f59e0b"),
    ),
}
METRICS = (("tokens", "completion tokens per question"), ("units", "{unit} per question"), ("accuracy", "accuracy"))


def make_charts(summary: dict[str, dict[str, dict[str, float]]], out_dir: Path, suffix: str = "") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for method, passes in METHODS.items():
        present = [(name, color) for name, color in passes if name in summary]
        if not present:
            continue
        unit = "samples" if method == "vote" else "rounds"
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        width = 0.8 / len(present)
        for ax, (metric, label) in zip(axes, METRICS, strict=True):
            for offset, (name, color) in enumerate(present):
                values = [summary[name].get(level, {}).get(metric, 0.0) for level in LEVELS]
                xs = [i + (offset - (len(present) - 1) / 2) * width for i in range(len(LEVELS))]
                ax.bar(xs, values, width, label=name, color=color)
            ax.set_xticks(range(len(LEVELS)), LEVELS)
            ax.set_title(label.format(unit=unit))
            if metric == "accuracy":
                ax.set_ylim(0, 1)
            ax.grid(axis="y", alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{method}: per similarity level (bench/compute_replay.py)")
        fig.tight_layout()
        path = out_dir / f"compute_{method}{suffix}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+")
    parser.add_argument("--out", default="docs/img")
    parser.add_argument("--suffix", default="", help="appended to the file names: compute_refine<suffix>.png")
    args = parser.parse_args(argv)
    from bench.compute_replay import summarize  # here, not at the top: compute_replay imports this module

    runs: list[dict[str, Any]] = [json.loads(Path(path).read_text(encoding="utf-8")) for path in args.results]
    summary = summarize([record for run in runs for record in run["records"]])
    for path in make_charts(summary, Path(args.out), args.suffix):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
