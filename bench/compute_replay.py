"""Adaptive compute on the replay: vote and refine against their fixed methods, per similarity level.

    python -m bench.compute_replay [--groups 10] [--seed 0] [--methods vote refine] \\
        [--out bench/results/compute-replay.json] [--png-dir docs/img] [--model PATH.gguf]

Starts the embedded llama.cpp server with the default model (or --model) and, per pass, a proxy in front of it
(fresh memory each), then sends the S0..S4 replay stream (bench/replay_dataset.py) through:

vote (temperature 0.7 unless --temperature says otherwise, up to 8 samples):
  fixed8-direct     8 samples per question straight to llama.cpp, majority by the bench
  vote-nomem        `speedup.samples = {max: 8}` through the proxy, memory off
  vote-mem          the same with memory on (the answer-format quality gate of bench.run_replay)
                  (--confident-logprob X, --unsure-split-logprob Y: both vote passes with
                   compute.confident_sample_logprob = X, compute.unsure_split_logprob = Y)
refine (temperature 0, up to 3 rounds):
  refine3-fixed     always 3 rounds straight to llama.cpp: the draft and two revisions asked as the proxy's
                    refine asks them (proxy/serving/refine.py revision_messages); each round's answer recorded
  refine-nomem      `speedup.refine = {max_rounds: 3}`, the model checks its own draft, memory off
  refine-mem        the same with memory on
  refine-checker    `speedup.refine = {max_rounds: 3}`, memory off, the draft checked by a second solve of
                    the verifier model (compute.refine_check = verifier_model: the bundled 1.5B, or the
                    server at --verifier-url)

One run, one pass after the other, on the same backend; the machine's load is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from openai import OpenAI

from bench import replay
from bench.probe_templates import DEFAULT_OUT as PROBE_FILE
from bench.probe_templates import solvable
from bench.procs import proxy
from bench.replay_dataset import LEVELS, ReplayItem, build_replay_stream, extract_final_number, is_correct
from proxy.config import Settings
from proxy.container import start_embedded_backend
from proxy.serving.refine import revision_messages

VOTE_PASSES = ("fixed8-direct", "vote-nomem", "vote-mem")
REFINE_PASSES = ("refine3-fixed", "refine-nomem", "refine-mem", "refine-checker")


def ask(
    client: OpenAI, item: ReplayItem, max_tokens: int, temperature: float, speedup: dict[str, Any]
) -> dict[str, Any]:
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model="qwen",
        messages=replay.chat_messages(item.question),
        temperature=temperature,
        max_tokens=max_tokens,
        extra_body={"speedup": speedup},
    )
    completion = raw.parse()
    text = completion.choices[0].message.content or "" if completion.choices else ""
    used = raw.headers.get("x-speedup-samples") or raw.headers.get("x-speedup-rounds") or "1/1"
    return {
        "votes": raw.headers.get("x-speedup-votes"),
        "stop": raw.headers.get("x-speedup-vote-stop") or raw.headers.get("x-speedup-refine-stop"),
        "latency_s": time.perf_counter() - started,
        "completion_tokens": completion.usage.completion_tokens if completion.usage else 0,
        "units": int(used.split("/")[0]),
        "tier": raw.headers.get("x-speedup-tier"),
        "correct": is_correct(text, item.gold),
        "answer": text,
    }


def fixed_direct(client: OpenAI, item: ReplayItem, max_tokens: int, samples: int, temperature: float) -> dict[str, Any]:
    """All samples at once straight to the backend; the client votes on the final numbers."""
    started = time.perf_counter()

    def one(_: int) -> Any:
        return client.chat.completions.create(
            model="qwen",
            messages=replay.chat_messages(item.question),
            temperature=temperature,
            max_tokens=max_tokens,
            logprobs=True,  # recorded for calibrating stopping rules offline; it does not change sampling
        )

    with ThreadPoolExecutor(samples) as pool:
        completions = list(pool.map(one, range(samples)))
    texts = [c.choices[0].message.content or "" for c in completions]
    finals = [extract_final_number(t) for t in texts]
    votes = Counter(f for f in finals if f is not None)
    winner = texts[finals.index(votes.most_common(1)[0][0])] if votes else texts[0]
    return {
        "finals": finals,
        "sample_tokens": [c.usage.completion_tokens if c.usage else 0 for c in completions],
        "finish": [c.choices[0].finish_reason for c in completions],
        "confidence": [trace_confidence(c.choices[0].logprobs) for c in completions],
        "latency_s": time.perf_counter() - started,
        "completion_tokens": sum(c.usage.completion_tokens for c in completions if c.usage),
        "units": samples,
        "tier": None,
        "correct": is_correct(winner, item.gold),
        "answer": winner,
    }


def refine_fixed_direct(client: OpenAI, item: ReplayItem, max_tokens: int, rounds: int) -> dict[str, Any]:
    """Every round straight to the backend at temperature 0: the draft, then each revision asked as the
    proxy asks it after a failed check; the last round is the answer."""
    started = time.perf_counter()
    messages = replay.chat_messages(item.question)
    texts: list[str] = []
    tokens = 0
    for _ in range(rounds):
        if texts:
            messages = revision_messages(messages, texts[-1])
        completion = client.chat.completions.create(
            model="qwen", messages=messages, temperature=0.0, max_tokens=max_tokens
        )
        texts.append(completion.choices[0].message.content or "")
        tokens += completion.usage.completion_tokens if completion.usage else 0
    return {
        "round_finals": [extract_final_number(t) for t in texts],
        "round_correct": [is_correct(t, item.gold) for t in texts],
        "latency_s": time.perf_counter() - started,
        "completion_tokens": tokens,
        "units": rounds,
        "tier": None,
        "correct": is_correct(texts[-1], item.gold),
        "answer": texts[-1],
    }


@contextmanager
def proxy_for(
    pass_name: str, backend_url: str, workdir: Path, vote_compute: dict[str, float], verifier_url: str | None = None
) -> Iterator[str]:
    """`vote_compute`: `compute` settings of the vote passes (the gate and stops calibrated per model)."""
    env: dict[str, str] = {}
    if pass_name.startswith("vote"):
        env.update({f"SPEEDUP_COMPUTE__{key.upper()}": json.dumps(value) for key, value in vote_compute.items()})
    extra: list[str] = []
    if pass_name.endswith("nomem") or pass_name == "refine-checker":
        extra = ["--memory", "off"]
    if pass_name == "refine-checker":
        env["SPEEDUP_COMPUTE__REFINE_CHECK"] = "verifier_model"
        if verifier_url:
            env["SPEEDUP_REUSE_VERIFIER__URL"] = verifier_url
    if pass_name == "vote-mem":
        env["SPEEDUP_MEMORY_MODES__VERIFIER"] = json.dumps({"kind": "regex", "pattern": replay.ANSWER_FORMAT})
    (workdir / pass_name).mkdir()
    with proxy(backend_url, workdir / pass_name, *extra, env=env) as url:
        yield url


def run_pass(
    pass_name: str,
    items: Sequence[ReplayItem],
    backend_url: str,
    workdir: Path,
    max_tokens: int,
    first: int = 0,
    vote_temperature: float = 0.7,
    vote_compute: dict[str, float] | None = None,
    verifier_url: str | None = None,
) -> list[dict[str, Any]]:
    """One pass over the stream from item `first` on (earlier items from a run that was stopped: --merge)."""
    records = []
    if first and pass_name.endswith("-mem"):
        raise SystemExit(f"{pass_name} builds its memory as it goes: it cannot resume at item {first}")
    if pass_name in ("fixed8-direct", "refine3-fixed"):
        client = replay.make_client(backend_url)
        for index, item in enumerate(items):
            if index >= first:
                if pass_name == "fixed8-direct":
                    result = fixed_direct(client, item, max_tokens, 8, vote_temperature)
                else:
                    result = refine_fixed_direct(client, item, max_tokens, 3)
                records.append(_record(pass_name, index, item, result))
        return records
    vote = pass_name.startswith("vote")
    speedup = {"samples": {"max": 8, "mode": "vote"}} if vote else {"refine": {"max_rounds": 3}}
    with proxy_for(pass_name, backend_url, workdir, vote_compute or {}, verifier_url) as url:
        client = replay.make_client(url)
        for index, item in enumerate(items):
            if index < first:
                continue
            result = ask(client, item, max_tokens, vote_temperature if vote else 0.0, speedup)
            records.append(_record(pass_name, index, item, result))
    return records


_LOG_LINE = re.compile(
    r"\[(?P<pass>[\w-]+) (?P<n>\d+)\] (?P<level>S\d) units=(?P<units>\d+) tok=(?P<tok>\d+) "
    r"(?P<ok>ok|bad) (?P<lat>[\d.]+)s tier=(?P<tier>\w+)"
)


def merged_records(paths: Sequence[str]) -> list[dict[str, Any]]:
    """Records of an earlier, stopped run: its JSON (finished passes) or its progress log (every item)."""
    records: list[dict[str, Any]] = []
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        if path.endswith(".json"):
            records += json.loads(text)["records"]
            continue
        for match in _LOG_LINE.finditer(text):
            records.append(
                {
                    "pass": match["pass"],
                    "index": int(match["n"]) - 1,
                    "level": match["level"],
                    "units": int(match["units"]),
                    "completion_tokens": int(match["tok"]),
                    "correct": match["ok"] == "ok",
                    "latency_s": float(match["lat"]),
                    "tier": None if match["tier"] == "None" else match["tier"],
                    "from_log": path,
                }
            )
    unique = {(r["pass"], r["index"]): r for r in records}
    return sorted(unique.values(), key=lambda r: (r["pass"], r["index"]))


def trace_confidence(logprobs: Any, window: int = 16, tail: int = 32) -> dict[str, float] | None:
    """Summaries of one sample's token log-probabilities (DeepConf, arXiv 2508.15260): mean, tail, weakest window."""
    values = [t.logprob for t in (getattr(logprobs, "content", None) or []) if t.logprob is not None]
    if not values:
        return None
    windows = [sum(values[i : i + window]) / window for i in range(max(1, len(values) - window + 1))]
    return {
        "mean": round(sum(values) / len(values), 4),
        "tail": round(sum(values[-tail:]) / len(values[-tail:]), 4),
        "lowest_window": round(min(windows), 4),
    }


def _record(pass_name: str, index: int, item: ReplayItem, result: dict[str, Any]) -> dict[str, Any]:
    record = {"pass": pass_name, "index": index, "level": item.level, "group": item.group, "gold": item.gold} | result
    print(
        f"[{pass_name} {index + 1}] {item.level} units={record['units']} tok={record['completion_tokens']} "
        f"{'ok' if record['correct'] else 'bad'} {record['latency_s']:.1f}s tier={record['tier']}",
        file=sys.stderr,
        flush=True,
    )
    return record


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """pass -> level (and S1-S3, S0+S4, all) -> n, accuracy, mean units, mean tokens, mean latency."""
    groups = {level: (level,) for level in LEVELS} | {
        "S1-S3": ("S1", "S2", "S3"),
        "S0+S4": ("S0", "S4"),
        "all": tuple(LEVELS),
    }
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for pass_name in dict.fromkeys(r["pass"] for r in records):
        summary[pass_name] = {}
        for name, levels in groups.items():
            rows = [r for r in records if r["pass"] == pass_name and r["level"] in levels]
            if not rows:
                continue
            summary[pass_name][name] = {
                "n": len(rows),
                "accuracy": sum(r["correct"] for r in rows) / len(rows),
                "units": sum(r["units"] for r in rows) / len(rows),
                "tokens": sum(r["completion_tokens"] for r in rows) / len(rows),
                "latency_s": sum(r["latency_s"] for r in rows) / len(rows),
            }
    return summary


def format_table(summary: dict[str, dict[str, dict[str, float]]], passes: Sequence[str], unit: str) -> str:
    present = [p for p in passes if p in summary]
    rows = [f"{'level':6} " + " | ".join(f"{p:>34}" for p in present)]
    rows.append(f"{'':6} " + " | ".join(f"{'acc':>6} {unit:>7} {'tokens':>8} {'lat s':>7}" + " " * 2 for _ in present))
    for level in (*LEVELS, "S1-S3", "S0+S4", "all"):
        cells = []
        for p in present:
            c = summary[p].get(level)
            cells.append(
                f"{c['accuracy']:>6.0%} {c['units']:>7.2f} {c['tokens']:>8.1f} {c['latency_s']:>7.2f}  "
                if c
                else " " * 34
            )
        rows.append(f"{level:6} " + " | ".join(cells))
    return "\n".join(rows)


def savings(summary: dict[str, dict[str, dict[str, float]]], base: str, other: str, level: str) -> dict[str, float]:
    """Fewer tokens and units of `other` than `base`, in percent, and the accuracy difference in points."""
    b, o = summary[base][level], summary[other][level]
    return {
        "tokens_saved_pct": 100 * (1 - o["tokens"] / b["tokens"]) if b["tokens"] else 0.0,
        "units_saved_pct": 100 * (1 - o["units"] / b["units"]) if b["units"] else 0.0,
        "accuracy_points": 100 * (o["accuracy"] - b["accuracy"]),
    }


def bars(summary: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    found = {}
    if {"vote-nomem", "fixed8-direct"} <= summary.keys():
        found["vote-nomem vs fixed8 (S0+S4)"] = savings(summary, "fixed8-direct", "vote-nomem", "S0+S4")
    if {"vote-mem", "fixed8-direct"} <= summary.keys():
        found["vote-mem vs fixed8 (S1-S3)"] = savings(summary, "fixed8-direct", "vote-mem", "S1-S3")
        found["vote-mem vs fixed8 (S3)"] = savings(summary, "fixed8-direct", "vote-mem", "S3")
    for other in ("refine-nomem", "refine-mem", "refine-checker"):
        if {other, "refine3-fixed"} <= summary.keys():
            found[f"{other} vs refine3-fixed (all)"] = savings(summary, "refine3-fixed", other, "all")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--temperature", type=float, default=0.7, help="of the vote passes (refine runs at 0)")
    parser.add_argument("--methods", nargs="+", choices=["vote", "refine"], default=["vote", "refine"])
    parser.add_argument("--out", default="bench/results/compute-replay.json")
    parser.add_argument("--png-dir", default=None, help="write the charts here (bench/compute_charts.py)")
    parser.add_argument("--passes", nargs="+", help="only these passes (of --methods)")
    parser.add_argument("--merge", nargs="*", default=[], help="records of a stopped run: its .json or progress .log")
    parser.add_argument(
        "--confident-logprob",
        type=float,
        help="compute.confident_sample_logprob of the vote passes (off unless given; -0.085 for the bundled model)",
    )
    parser.add_argument(
        "--unsure-split-logprob",
        type=float,
        help="compute.unsure_split_logprob of the vote passes (off unless given; -0.15 for the bundled model)",
    )
    parser.add_argument("--levels", nargs="+", choices=LEVELS, help="only these levels (memory-off passes only)")
    parser.add_argument("--verifier-url", help="refine-checker: the verifier model at this URL (.../v1), not embedded")
    parser.add_argument("--model", type=Path, help="the served GGUF (default: the bundled Qwen2.5-Coder-0.5B)")
    args = parser.parse_args(argv)
    items = build_replay_stream(groups=args.groups, seed=args.seed, templates=solvable(PROBE_FILE))
    passes = [*(VOTE_PASSES if "vote" in args.methods else ()), *(REFINE_PASSES if "refine" in args.methods else ())]
    passes = [p for p in passes if not args.passes or p in args.passes]
    if args.levels:
        if any(p.endswith("-mem") for p in passes):
            parser.error("--levels drops the earlier levels a memory-on pass learns from")
        items = [item for item in items if item.level in args.levels]
    earlier = merged_records(args.merge)
    workdir = Path(tempfile.mkdtemp(prefix="speedup-compute-"))
    load_before = os.getloadavg()
    started = time.time()
    settings = Settings()
    if args.model:
        settings.embedded.model_path = args.model
    server, backend_url = start_embedded_backend(settings)
    records: list[dict[str, Any]] = list(earlier)
    try:
        for pass_name in passes:
            done = sum(1 for r in earlier if r["pass"] == pass_name)
            records += run_pass(
                pass_name,
                items,
                backend_url,
                workdir,
                args.max_tokens,
                first=done,
                vote_temperature=args.temperature,
                vote_compute={
                    key: value
                    for key, value in (
                        ("confident_sample_logprob", args.confident_logprob),
                        ("unsure_split_logprob", args.unsure_split_logprob),
                    )
                    if value is not None
                },
                verifier_url=args.verifier_url,
            )
            Path(args.out).write_text(json.dumps({"records": records}, indent=1), encoding="utf-8")
    finally:
        server.stop()
    summary = summarize(records)
    tables = "\n\n".join(
        [format_table(summary, VOTE_PASSES, "samples"), format_table(summary, REFINE_PASSES, "rounds")]
    )
    found = bars(summary)
    print(tables)
    for name, figures in found.items():
        print(
            f"{name}: tokens {figures['tokens_saved_pct']:.1f}% fewer, units {figures['units_saved_pct']:.1f}% "
            f"fewer, accuracy {figures['accuracy_points']:+.1f} points"
        )
    machine = {"cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg()}
    payload = {
        "config": vars(args)
        | {
            "model": str(args.model or "bundled 0.5B"),
            "items": len(items),
            "seconds": round(time.time() - started, 1),
            "machine": machine,
        },
        # Items that came from --merge were run before, with the same stream and code (see docs/BENCHMARKS.md).
        "records": records,
        "summary": summary,
        "bars": found,
        "tables": tables,
    }
    Path(args.out).write_text(json.dumps(payload, indent=1), encoding="utf-8")
    if args.png_dir:
        from bench.compute_charts import make_charts

        for path in make_charts(summary, Path(args.png_dir)):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
