"""Replay the S0..S4 stream straight to a backend, then through speedup-proxy, and compare.

    python -m bench.replay --direct-url http://127.0.0.1:8080 --proxy-url http://127.0.0.1:8000 \\
        [--groups 10] [--max-tokens 400] [--model default] [--out results.json]

Two separate passes over the whole stream, direct first (so the backend pass never sees a
memory).  URLs may be given with or without the trailing ``/v1``.  Either URL may be omitted
to run a single pass.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from openai import OpenAI

from bench.replay_dataset import (
    DEFAULT_MAX_CHARS,
    ReplayItem,
    build_replay_stream,
    extract_final_number,
    is_correct,
)
from bench.report import format_level_table, reuse_count, summarize_levels

# A final answer is stated: "Answer: 42", "the answer is $42", "\\boxed{42}" (the model's favourite).
ANSWER_FORMAT = r"(?i)(?:answer\s*(?:is\b|:|=)|\\boxed\{)[^\d\n]{0,40}\d"
SYSTEM_PROMPT = (
    "Solve the math word problem. Think step by step briefly, "
    "then end with the line 'Answer: ' followed by the final number."
)



def chat_messages(question: str) -> list[dict[str, str]]:
    """The replay's conversation for one question: its system prompt, then the question."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


def add_prompt_cache_option(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--prompt-cache",
        choices=["on", "off"],
        default=default,
        help="llama.cpp's prompt cache; on, one prompt's temperature-0 answers differ between calls; "
        "off sends cache_prompt=false, passed through by the proxy",
    )


def prompt_cache_body(setting: str) -> dict[str, Any] | None:
    """Extra body fields for `--prompt-cache`."""
    return {"cache_prompt": False} if setting == "off" else None


TIER_HEADER = "x-speedup-tier"
SIMILARITY_HEADER = "x-speedup-similarity"
SAVED_TOKENS_HEADER = "x-speedup-saved-tokens"


def api_base(url: str) -> str:
    """``http://h:p`` or ``http://h:p/v1`` -> ``http://h:p/v1``."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def make_client(url: str, api_key: str | None = None, timeout: float = 600.0) -> OpenAI:
    return OpenAI(
        base_url=api_base(url),
        api_key=api_key or os.environ.get("OPENAI_API_KEY") or "sk-no-key",
        timeout=timeout,
        max_retries=0,
    )


def _float(x: str | None) -> float | None:
    try:
        return float(x) if x is not None else None
    except ValueError:
        return None


def _int(x: str | None) -> int | None:
    f = _float(x)
    return int(f) if f is not None else None


def ask(
    client: OpenAI,
    item: ReplayItem,
    *,
    model: str,
    max_tokens: int,
    pass_name: str,
    index: int,
    extra_body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One chat completion for ``item``; returns a record (see :mod:`bench.report`)."""
    rec: dict[str, Any] = {
        "pass": pass_name,
        "index": index,
        "level": item.level,
        "group": item.group,
        "template": item.template,
        "gold": item.gold,
        "answer": None,
        "extracted": None,
        "correct": False,
        "completion_tokens": None,
        "prompt_tokens": None,
        "latency_s": None,
        "finish_reason": None,
        "tier": None,
        "similarity": None,
        "saved_tokens": None,
        "error": None,
        "response_id": None,
    }
    t0 = time.perf_counter()
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=chat_messages(item.question),
            temperature=0,
            max_tokens=max_tokens,
            extra_body=extra_body,
        )
        completion = raw.parse()
        rec["latency_s"] = time.perf_counter() - t0
    except Exception as exc:  # keep going: a failed call is recorded as wrong
        rec["latency_s"] = time.perf_counter() - t0
        rec["error"] = f"{type(exc).__name__}: {exc}"
        return rec
    choice = completion.choices[0] if completion.choices else None
    text = (choice.message.content if choice and choice.message else None) or ""
    rec["answer"] = text
    rec["response_id"] = completion.id
    rec["finish_reason"] = choice.finish_reason if choice else None
    rec["extracted"] = extract_final_number(text)
    rec["correct"] = is_correct(text, item.gold)
    if completion.usage is not None:
        rec["completion_tokens"] = completion.usage.completion_tokens
        rec["prompt_tokens"] = completion.usage.prompt_tokens
    if pass_name == "proxy":
        rec["tier"] = raw.headers.get(TIER_HEADER)
        rec["similarity"] = _float(raw.headers.get(SIMILARITY_HEADER))
        rec["saved_tokens"] = _int(raw.headers.get(SAVED_TOKENS_HEADER))
    return rec


def run_pass(
    client: OpenAI,
    items: Sequence[ReplayItem],
    *,
    pass_name: str,
    model: str = "default",
    max_tokens: int = 400,
    verbose: bool = True,
    feedback: bool = False,
    extra_body: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Send every item in stream order; one record per item.

    With `feedback` (proxy pass only), every answer is rated good or bad from its gold answer
    through `POST /v1/feedback`, as a support team rating its bot's answers would.
    """
    records = []
    for i, item in enumerate(items):
        rec = ask(
            client, item, model=model, max_tokens=max_tokens, pass_name=pass_name, index=i, extra_body=extra_body
        )
        records.append(rec)
        if feedback and pass_name == "proxy" and rec["response_id"]:
            rating = "good" if rec["correct"] else "bad"
            client.post("/feedback", cast_to=object, body={"response_id": rec["response_id"], "rating": rating})
        if verbose:
            status = "ERR " + rec["error"] if rec["error"] else ("ok " if rec["correct"] else "bad")
            tier = f" tier={rec['tier']} sim={rec['similarity']}" if pass_name == "proxy" else ""
            print(
                f"[{pass_name} {i + 1}/{len(items)}] {item.level} g{item.group} gold={item.gold} "
                f"got={rec['extracted']} {status} tok={rec['completion_tokens']} "
                f"{rec['latency_s']:.2f}s{tier}",
                file=sys.stderr,
                flush=True,
            )
    return records


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("--direct-url", help="OpenAI-compatible backend (e.g. http://127.0.0.1:8080)")
    ap.add_argument("--proxy-url", help="speedup-proxy in front of the same backend")
    ap.add_argument("--groups", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="replay stream seed")
    ap.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS, help="template question length cap")
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--model", default="default")
    ap.add_argument("--api-key", default=None, help="default: $OPENAI_API_KEY or a dummy key")
    ap.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, seconds")
    ap.add_argument("--out", default=None, help="write records, summary and table as JSON here")
    ap.add_argument("--quiet", action="store_true", help="no per-call progress on stderr")
    ap.add_argument("--feedback", choices=["none", "oracle"], default="none", help="rate proxy answers from gold")
    ap.add_argument("--templates", type=int, nargs="*", help="narrow the template pool (bench.probe_templates)")
    add_prompt_cache_option(ap, default="on")
    args = ap.parse_args(argv)
    if not args.direct_url and not args.proxy_url:
        ap.error("give --direct-url and/or --proxy-url")

    items = build_replay_stream(
        groups=args.groups, seed=args.seed, max_chars=args.max_chars, templates=args.templates or None
    )
    records: list[dict[str, Any]] = []
    for pass_name, url in (("direct", args.direct_url), ("proxy", args.proxy_url)):
        if not url:
            continue
        client = make_client(url, args.api_key, args.timeout)
        records += run_pass(
            client, items, pass_name=pass_name, model=args.model, max_tokens=args.max_tokens,
            verbose=not args.quiet, feedback=args.feedback == "oracle",
            extra_body=prompt_cache_body(args.prompt_cache),
        )

    table = format_level_table(records)
    print(table)
    if args.out:
        payload = {
            "config": {
                "direct_url": args.direct_url,
                "proxy_url": args.proxy_url,
                "groups": args.groups,
                "seed": args.seed,
                "max_chars": args.max_chars,
                "max_tokens": args.max_tokens,
                "model": args.model,
                "system_prompt": SYSTEM_PROMPT,
                "feedback": args.feedback,
                "templates": args.templates,
                "prompt_cache": args.prompt_cache,
            },
            "items": [it.model_dump() for it in items],
            "records": records,
            "summary": summarize_levels(records),
            "reuse_at_S3": reuse_count(records, "S3"),
            "table": table,
        }
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
        print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
