"""PNG charts of a replay (bench/replay.py --out results.json): direct vs proxy per similarity level.

    python -m bench.charts results.json [--out docs/img] [--prefix replay]

Writes {prefix}_tokens.png (mean completion tokens), {prefix}_latency.png (mean latency),
{prefix}_accuracy.png (share correct), {prefix}_tiers.png (the proxy's tier mix) and
{prefix}_summary.png (tokens, latency and accuracy side by side).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

PASSES = ("direct", "proxy")
TIERS = ("reuse", "guided", "cold")
COLORS = {"direct": "#9ca3af", "proxy": "#0f9d58", "reuse": "#0f9d58", "guided": "#3b82f6", "cold": "#9ca3af"}


@dataclass
class Cell:
    """The records of one pass at one level."""

    n: int = 0
    correct: int = 0
    tokens: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    tiers: dict[str, int] = field(default_factory=dict)

    @property
    def mean_tokens(self) -> float | None:
        return sum(self.tokens) / len(self.tokens) if self.tokens else None

    @property
    def mean_latency(self) -> float | None:
        return sum(self.latencies) / len(self.latencies) if self.latencies else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None


Table = dict[str, dict[str, Cell]]  # level -> pass -> cell


def load_records(path: Path) -> list[Mapping[str, Any]]:
    data = json.loads(path.read_text())
    records = data["records"] if isinstance(data, Mapping) else data
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a list of records or an object with 'records'")
    return records


def level_table(records: Sequence[Mapping[str, Any]]) -> Table:
    table: Table = {}
    for record in records:
        name = record.get("pass")
        if name not in PASSES or record.get("level") is None:
            continue
        cell = table.setdefault(str(record["level"]), {}).setdefault(name, Cell())
        cell.n += 1
        cell.correct += 1 if record.get("correct") else 0
        if record.get("completion_tokens") is not None:
            cell.tokens.append(float(record["completion_tokens"]))
        latency = record.get("latency_s", record.get("latency"))
        if latency is not None:
            cell.latencies.append(float(latency))
        tier = str(record.get("tier") or "none")
        cell.tiers[tier] = cell.tiers.get(tier, 0) + 1
    return dict(sorted(table.items()))


def _grouped_bars(ax: Axes, table: Table, metric: str, title: str, ylabel: str, percent: bool = False) -> None:
    levels = list(table)
    width = 0.38
    for offset, name in ((-width / 2, "direct"), (width / 2, "proxy")):
        values = [getattr(table[level].get(name, Cell()), metric) for level in levels]
        shown = [(v * 100 if percent else v) if v is not None else 0.0 for v in values]
        bars = ax.bar([i + offset for i in range(len(levels))], shown, width, label=name, color=COLORS[name])
        labels = ["" if v is None else (f"{v * 100:.0f}%" if percent else f"{v:.3g}") for v in values]
        ax.bar_label(bars, labels=labels, fontsize=8, padding=2)
    ax.set_xticks(range(len(levels)), levels)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("similarity level (S0 first sight … S4 unrelated)")
    if percent:
        ax.set_ylim(0, 110)
    ax.margins(y=0.15)
    ax.legend(frameon=False)
    ax.grid(axis="y", alpha=0.3)


METRICS = (
    ("tokens", "mean_tokens", "Completion tokens per request", "tokens (mean)", False),
    ("latency", "mean_latency", "Latency per request", "seconds (mean)", False),
    ("accuracy", "accuracy", "Accuracy", "correct (%)", True),
)


def _tier_mix(ax: Axes, table: Table) -> None:
    levels = list(table)
    bottoms = [0.0] * len(levels)
    for tier in (*TIERS, "none"):
        counts = [table[level].get("proxy", Cell()).tiers.get(tier, 0) for level in levels]
        if tier == "none" and not any(counts):
            continue
        label = "no tier (failed call)" if tier == "none" else tier
        ax.bar(levels, counts, 0.6, bottom=bottoms, label=label, color=COLORS.get(tier, "#fde68a"))
        bottoms = [b + c for b, c in zip(bottoms, counts, strict=True)]
    ax.set_title("Proxy tier per level")
    ax.set_ylabel("requests")
    ax.set_xlabel("similarity level")
    ax.legend(frameon=False)
    ax.grid(axis="y", alpha=0.3)


def make_charts(records: Sequence[Mapping[str, Any]], out_dir: Path, prefix: str = "replay") -> list[Path]:
    """Write the charts; returns their paths."""
    table = level_table(records)
    if not table:
        raise ValueError("no direct or proxy records with a level")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, metric, title, ylabel, percent in METRICS:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
        _grouped_bars(ax, table, metric, f"{title}: direct vs proxy", ylabel, percent)
        written.append(_save(fig, out_dir / f"{prefix}_{name}.png"))
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    _tier_mix(ax, table)
    written.append(_save(fig, out_dir / f"{prefix}_tiers.png"))
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8), dpi=110)
    for ax, (_, metric, title, ylabel, percent) in zip(axes, METRICS, strict=True):
        _grouped_bars(ax, table, metric, title, ylabel, percent)
    written.append(_save(fig, out_dir / f"{prefix}_summary.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.charts", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="JSON written by bench/replay.py --out")
    parser.add_argument("--out", type=Path, default=Path("docs/img"), help="directory for the PNGs")
    parser.add_argument("--prefix", default="replay", help="file name prefix")
    args = parser.parse_args(argv)
    try:
        paths = make_charts(load_records(args.results), args.out, args.prefix)
    except (OSError, ValueError) as error:
        print(f"bench.charts: {error}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
