"""Replay the S0..S4 stream once per memory mode and compare accuracy, tokens and latency per level.

    python -m bench.replay_modes --backend-url http://127.0.0.1:8080/v1 --groups 4 [--out modes.json]
    python -m bench.replay_modes --groups 4            # starts the embedded llama.cpp server itself
    python -m bench.replay_modes --report modes.json   # print the tables of a saved run again

Time: --groups 3 took 26 minutes with the 0.5B model at ~20 tokens/s (a shared machine); it
scales with groups x 6 modes x up to --max-tokens per answer.

For each mode a fresh proxy (own memory dir, `memory_modes.default = mode`) is started in this
process in front of the same backend, and the whole stream is sent through it in order. After
each answer the bench gives oracle feedback (good/bad from the gold answer; `--feedback none` to
skip), which is what lets `reflect` learn from failures, and then waits for the proxy's
background work so that lessons written after item i are in place for item i+1.

Lesson-writing tokens are counted per item (via the proxy's reflection listeners) and
attributed to the level of the request that triggered them; they are part of each mode's cost.
Bars checked: every mode spends no more generated tokens than `none` at S4 (answers plus
lessons), and exemplars+reflect_update is at least as accurate as exemplars at S3.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from openai import OpenAI

from bench.probe_templates import solvable
from bench.replay import ANSWER_FORMAT, add_prompt_cache_option, chat_messages, make_client, prompt_cache_body
from bench.replay_dataset import (
    DEFAULT_MAX_CHARS,
    LEVELS,
    ReplayItem,
    build_replay_stream,
    extract_final_number,
    is_correct,
)
from bench.report import format_level_table
from memory_store.embedding.embedder import TextEncoder
from proxy.app import create_app
from proxy.config import load_settings
from proxy.container import AppContainer, build_container, load_encoder
from proxy.learning.memory_modes import MEMORY_MODES
from proxy.learning.reflection_writer import ReflectionCost

SHORT = {
    "none": "none",
    "exemplars": "exemplars",
    "reflect": "reflect",
    "multi_case_reflect": "multi_case",
    "reflect_update": "refl_update",
    "exemplars+reflect_update": "ex+refl_upd",
}


@dataclass
class LessonMeter:
    """Reflection listener: lesson-writing tokens so far."""

    prompt: int = 0
    completion: int = 0
    calls: int = 0

    def __call__(self, cost: ReflectionCost) -> None:
        self.prompt += cost.prompt_tokens
        self.completion += cost.completion_tokens
        self.calls += 1


class ProxyThread:
    """A proxy app served by uvicorn in a thread of this process."""

    def __init__(self, container: AppContainer) -> None:
        self.container = container
        config = uvicorn.Config(create_app(container), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> str:
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("proxy did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def settle(self, timeout_s: float = 600.0) -> float:
        """Wait for background work (episodes, verification, lessons); the seconds it took."""
        started = time.perf_counter()
        while self.container.background.pending:
            if time.perf_counter() - started > timeout_s:
                print("warning: background work still running", file=sys.stderr)
                break
            time.sleep(0.05)
        return time.perf_counter() - started

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.container.close_stores()


def ask(
    client: OpenAI, item: ReplayItem, model: str, max_tokens: int, extra_body: dict[str, Any] | None = None
) -> tuple[dict[str, Any], str | None]:
    """One request through the proxy; the record and the completion id (for feedback)."""
    rec: dict[str, Any] = {"level": item.level, "group": item.group, "gold": item.gold, "error": None}
    started = time.perf_counter()
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=chat_messages(item.question),
            temperature=0,
            max_tokens=max_tokens,
            extra_body=extra_body,
        )
        completion = raw.parse()
    except Exception as error:  # noqa: BLE001 - a failed call is recorded as wrong
        rec.update(latency_s=time.perf_counter() - started, error=f"{type(error).__name__}: {error}", correct=False)
        rec.update(completion_tokens=None, prompt_tokens=None, tier=None, reflection=None)
        return rec, None
    rec["latency_s"] = time.perf_counter() - started
    text = (completion.choices[0].message.content if completion.choices else None) or ""
    usage = completion.usage
    rec.update(
        answer=text,
        extracted=extract_final_number(text),
        correct=is_correct(text, item.gold),
        completion_tokens=usage.completion_tokens if usage else None,
        prompt_tokens=usage.prompt_tokens if usage else None,
        finish_reason=completion.choices[0].finish_reason if completion.choices else None,
        tier=raw.headers.get("x-speedup-tier"),
        similarity=float(raw.headers.get("x-speedup-similarity") or 0),
        reflection=raw.headers.get("x-speedup-reflection"),
    )
    return rec, completion.id


def run_mode(
    mode: str,
    items: Sequence[ReplayItem],
    backend_url: str,
    encoder: TextEncoder,
    args: argparse.Namespace,
    on_record: Callable[[list[dict[str, Any]]], None] = lambda records: None,
    lessons: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Replay the stream through a fresh proxy in `mode`; the lessons it wrote go to `lessons`."""
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=f"replay-{SHORT[mode]}-") as tmp:
        modes: dict[str, Any] = {"default": mode}
        if args.verifier_regex:
            modes["verifier"] = {"kind": "regex", "pattern": args.verifier_regex}
        flags = {
            "backend_url": backend_url,
            "data_dir": tmp,
            "memory_modes": modes,
            "backend_timeout_s": args.timeout,
            "memory_deadline_ms": args.memory_deadline_ms,
        }
        container = build_container(load_settings(flags=flags, environ={}), encoder=encoder)
        meter = LessonMeter()
        container.reflection_listeners.append(meter)
        proxy = ProxyThread(container)
        url = proxy.start()
        client = make_client(url, timeout=args.timeout)
        extra_body = prompt_cache_body(args.prompt_cache)
        try:
            for index, item in enumerate(items):
                before = (meter.prompt, meter.completion, meter.calls)
                rec, response_id = ask(client, item, args.model, args.max_tokens, extra_body)
                if args.feedback == "oracle" and response_id is not None:
                    rating = "good" if rec["correct"] else "bad"
                    httpx.post(url + "/v1/feedback", json={"response_id": response_id, "rating": rating}, timeout=60)
                rec["background_s"] = proxy.settle()
                rec.update(
                    mode=mode,
                    index=index,
                    lesson_prompt_tokens=meter.prompt - before[0],
                    lesson_completion_tokens=meter.completion - before[1],
                    lesson_calls=meter.calls - before[2],
                )
                records.append(rec)
                on_record(records)
                if not args.quiet:
                    _progress(rec, len(items))
        finally:
            if lessons is not None and container.learning is not None:
                store = container.learning.reflections
                lessons += [r.public() | {"mode": mode} for t in store.tenants() for r in store.list_reflections(t)]
            proxy.stop()
    return records


def _progress(rec: dict[str, Any], total: int) -> None:
    status = "ERR " + rec["error"] if rec["error"] else ("ok " if rec["correct"] else "bad")
    lesson = f" lesson+{rec['lesson_completion_tokens']}" if rec["lesson_calls"] else ""
    print(
        f"[{SHORT[rec['mode']]} {rec['index'] + 1}/{total}] {rec['level']} g{rec['group']} {status} "
        f"tok={rec['completion_tokens']} {rec['latency_s']:.1f}s tier={rec['tier']}"
        f"{' +lesson-in' if rec['reflection'] else ''}{lesson}",
        file=sys.stderr,
        flush=True,
    )


# -- report ------------------------------------------------------------------------------------


def summarize(records: Sequence[dict[str, Any]], modes: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """mode -> level (S0..S4 and S1-S3) -> accuracy, tokens, lesson tokens, latency, tiers."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for mode in modes:
        out[mode] = {}
        for level, members in [(lv, (lv,)) for lv in LEVELS] + [("S1-S3", ("S1", "S2", "S3"))]:
            recs = [r for r in records if r["mode"] == mode and r["level"] in members]
            if not recs:
                continue
            latencies = [r["latency_s"] for r in recs if r.get("latency_s") is not None]
            out[mode][level] = {
                "n": len(recs),
                "accuracy": sum(1 for r in recs if r["correct"]) / len(recs),
                "completion_tokens": sum(r["completion_tokens"] or 0 for r in recs),
                "lesson_completion_tokens": sum(r["lesson_completion_tokens"] for r in recs),
                "lesson_prompt_tokens": sum(r["lesson_prompt_tokens"] for r in recs),
                "mean_latency_s": sum(latencies) / len(latencies) if latencies else None,
                "lessons_injected": sum(1 for r in recs if r.get("reflection")),
                "tiers": dict(Counter(str(r.get("tier")) for r in recs)),
                "errors": sum(1 for r in recs if r["error"]),
            }
    return out


def _grid(title: str, rows: list[str], modes: Sequence[str], cell: Any) -> str:
    header = [title, *[SHORT[m] for m in modes]]
    lines = [header] + [[row, *[cell(m, row) for m in modes]] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        for line in lines
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def format_modes_table(summary: dict[str, dict[str, dict[str, Any]]], modes: Sequence[str]) -> str:
    rows = [lv for lv in (*LEVELS, "S1-S3") if any(lv in summary[m] for m in modes)]

    def get(mode: str, row: str) -> dict[str, Any] | None:
        return summary[mode].get(row)

    def accuracy(mode: str, row: str) -> str:
        s = get(mode, row)
        return "-" if s is None else f"{100 * s['accuracy']:.0f}%"

    def tokens(mode: str, row: str) -> str:
        s = get(mode, row)
        if s is None:
            return "-"
        lesson = s["lesson_completion_tokens"]
        return f"{s['completion_tokens']}+{lesson}" if lesson else str(s["completion_tokens"])

    def lesson_prompt(mode: str, row: str) -> str:
        s = get(mode, row)
        return "-" if s is None else str(s["lesson_prompt_tokens"])

    def latency(mode: str, row: str) -> str:
        s = get(mode, row)
        return "-" if s is None or s["mean_latency_s"] is None else f"{s['mean_latency_s']:.2f}s"

    def tiers(mode: str, row: str) -> str:
        s = get(mode, row)
        if s is None:
            return "-"
        t = s["tiers"]
        return f"{t.get('reuse', 0)}/{t.get('guided', 0)}/{t.get('cold', 0)} L{s['lessons_injected']}"

    return "\n\n".join(
        [
            _grid("accuracy", rows, modes, accuracy),
            _grid("completion tokens (answers+lesson writing)", rows, modes, tokens),
            _grid("lesson-writing prompt tokens", rows, modes, lesson_prompt),
            _grid("mean latency", rows, modes, latency),
            _grid("tiers reuse/guided/cold, L=lessons injected", rows, modes, tiers),
        ]
    )


def check_bars(summary: dict[str, dict[str, dict[str, Any]]], modes: Sequence[str]) -> list[str]:
    lines = []
    if "none" in summary and "S4" in summary["none"]:
        base = summary["none"]["S4"]["completion_tokens"]
        for mode in modes:
            if mode == "none" or "S4" not in summary[mode]:
                continue
            s = summary[mode]["S4"]
            spent = s["completion_tokens"] + s["lesson_completion_tokens"]
            verdict = "PASS" if spent <= base else "FAIL"
            line = f"{verdict}  S4 tokens {SHORT[mode]}: {spent} (answers {s['completion_tokens']}) <= none {base}"
            untouched = s["tiers"].get("cold", 0) == s["n"] and not s["lessons_injected"]
            if verdict == "FAIL" and untouched and not s["lesson_completion_tokens"]:
                line += "  (memory unused at S4: all cold, no lesson; the difference is backend nondeterminism)"
            lines.append(line)
    both = "exemplars+reflect_update"
    if "exemplars" in summary and both in summary and "S3" in summary["exemplars"] and "S3" in summary[both]:
        a, b = summary[both]["S3"]["accuracy"], summary["exemplars"]["S3"]["accuracy"]
        verdict = "PASS" if a >= b else "FAIL"
        lines.append(f"{verdict}  S3 accuracy ex+refl_upd {100 * a:.0f}% >= exemplars {100 * b:.0f}%")
    return lines


def per_mode_tables(records: Sequence[dict[str, Any]], modes: Sequence[str]) -> str:
    """bench/report's direct-vs-proxy table per mode, with `none` as the direct pass."""
    if "none" not in modes:
        return ""
    base = [dict(r, **{"pass": "direct"}) for r in records if r["mode"] == "none"]
    parts = []
    for mode in modes:
        if mode == "none":
            continue
        mine = [dict(r, **{"pass": "proxy"}) for r in records if r["mode"] == mode]
        parts.append(f"== {mode} vs none ==\n{format_level_table(base + mine)}")
    return "\n\n".join(parts)


# -- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replay_modes", description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend-url", help="OpenAI-compatible backend; default: start the embedded llama.cpp server")
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS)
    ap.add_argument("--max-tokens", type=int, default=512, help="the 0.5B model needs ~250-450 on these")
    ap.add_argument("--model", default="default")
    ap.add_argument("--modes", default=",".join(MEMORY_MODES), help="comma-separated, default: all")
    ap.add_argument("--feedback", choices=["oracle", "none"], default="oracle")
    ap.add_argument(
        "--verifier-regex",
        default=ANSWER_FORMAT,
        help="memory_modes.verifier: only answers stating a final number are kept ('' turns it off)",
    )
    ap.add_argument("--timeout", type=float, default=1800.0, help="per request, client and proxy->backend")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--memory-deadline-ms",
        type=float,
        default=1000.0,
        help="recall deadline; the proxy's 50 ms fails open on a busy shared machine, which is noise here",
    )
    ap.add_argument("--report", type=Path, help="only print the tables of a saved --out file")
    add_prompt_cache_option(ap, default="off")
    ap.add_argument(
        "--templates",
        choices=["all", "solvable"],
        default="solvable",
        help="solvable: templates the model solved in bench/results/template_probe.json (bench.probe_templates)",
    )
    args = ap.parse_args(argv)
    if args.report is not None:
        saved = json.loads(args.report.read_text(encoding="utf-8"))
        summary = summarize(saved["records"], saved["config"]["modes"])
        print(format_modes_table(summary, saved["config"]["modes"]))
        print("\n" + "\n".join(check_bars(summary, saved["config"]["modes"])))
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MEMORY_MODES]
    if unknown:
        ap.error(f"unknown modes {unknown}; choose from {', '.join(MEMORY_MODES)}")

    pool = solvable() if args.templates == "solvable" else None
    items = build_replay_stream(groups=args.groups, seed=args.seed, max_chars=args.max_chars, templates=pool)
    server = None
    backend_url = args.backend_url
    if backend_url is None:
        from proxy.config import Settings
        from proxy.container import start_embedded_backend

        server, backend_url = start_embedded_backend(Settings())
    encoder = load_encoder(load_settings(environ={}))  # the proxy's default embedder
    records: list[dict[str, Any]] = []
    started = time.time()
    done: list[str] = []
    lessons: list[dict[str, Any]] = []
    try:
        for mode in modes:

            def save(partial: list[dict[str, Any]], mode: str = mode, before: tuple[Any, ...] = tuple(records)) -> None:
                if args.out:  # after every item, so that a long or interrupted run leaves results behind
                    write_results(args, items, [*before, *partial], [*done, mode], time.time() - started, lessons)

            records.extend(run_mode(mode, items, backend_url, encoder, args, save, lessons))
            done.append(mode)
            if args.out:  # now with the mode's lessons
                write_results(args, items, records, done, time.time() - started, lessons)
    finally:
        if server is not None:
            server.stop()
    summary = summarize(records, done)
    print(format_modes_table(summary, done))
    print("\n" + "\n".join(check_bars(summary, done)))
    print(f"\n{len(items)} items x {len(done)} modes in {time.time() - started:.0f}s", file=sys.stderr)
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def write_results(
    args: argparse.Namespace,
    items: Sequence[ReplayItem],
    records: list[dict[str, Any]],
    modes: list[str],
    seconds: float,
    lessons: list[dict[str, Any]],
) -> None:
    summary = summarize(records, modes)
    payload = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()} | {"modes": modes},
        "seconds": seconds,
        "items": [it.model_dump() for it in items],
        "records": records,
        "summary": summary,
        "bars": check_bars(summary, modes),
        "table": format_modes_table(summary, modes),
        "per_mode": per_mode_tables(records, modes),
        "lessons": lessons,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
