"""Does a served model tell a paraphrase from a look-alike in the reuse decision's unsure band?

The band: single-question pairs the folds refuse (`budget.reuse.compare` says "different") whose
cosine is at least --min-similarity and that have no hard difference (a number, negation, owner,
comparison or order: budget/reuse/equivalence.py; --unfiltered asks about those too). Each pair is
put to an OpenAI-compatible chat backend as the proxy puts it ("Same or Different?", P(Same) from
the first token's log-probabilities). Prints, per P(Same) threshold, how many true paraphrases and
how many traps it would pass.

    python -m bench.verifier_probe --base-url http://127.0.0.1:8091/v1 --split calibration
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.reuse_eval import ask_pair, load_pairs, score
from budget.reuse.equivalence import hard_difference


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.verifier_probe")
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--split", default="calibration")
    ap.add_argument("--min-similarity", type=float, default=0.6)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--unfiltered", action="store_true", help="ask about pairs with a hard difference too")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    from proxy.config import load_settings
    from proxy.container import load_encoder

    encoder = load_encoder(load_settings(environ={}))
    pairs = [p for p in load_pairs(args.split) if p.kind == "question"]
    scored = score(pairs, encoder.encode, [0.55])
    band = [
        s for s in scored
        if not s.verdicts[0.55] and s.similarity >= args.min_similarity
        and (args.unfiltered or hard_difference(s.pair.a[-1]["content"], s.pair.b[-1]["content"]) is None)
    ]  # fmt: skip
    if args.limit:
        band = band[: args.limit]
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with httpx.Client(base_url=args.base_url, timeout=60) as client:
        for item in band:
            a, b = item.pair.a[-1]["content"], item.pair.b[-1]["content"]
            p, tokens, _ = ask_pair(client, a, b)
            rows.append({
                "id": item.pair.id, "category": item.pair.category, "hit": item.pair.hit,
                "hard": hard_difference(a, b),
                "similarity": round(item.similarity, 4), "p_same": round(p, 4), "tokens": tokens,
            })  # fmt: skip
    elapsed = time.perf_counter() - started
    hits = [r for r in rows if r["hit"]]
    traps = [r for r in rows if not r["hit"]]
    print(f"band: {len(hits)} hits, {len(traps)} traps; {elapsed / max(1, len(rows)):.2f} s a pair")
    print(f"{'P(Same) >=':>10} {'hits passed':>12} {'traps passed':>13}")
    for threshold in (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995):
        h = sum(r["p_same"] >= threshold for r in hits)
        t = sum(r["p_same"] >= threshold for r in traps)
        print(f"{threshold:>10} {h:>6} ({h / max(1, len(hits)):.0%}) {t:>6} ({t / max(1, len(traps)):.1%})")
    by_category: dict[str, list[float]] = {}
    for r in rows:
        by_category.setdefault(r["category"], []).append(r["p_same"])
    for name, values in sorted(by_category.items()):
        print(f"  {name:20s} n={len(values):3d} median P(Same) {float(np.median(values)):.3f}")
    if args.out:
        args.out.write_text(json.dumps({"split": args.split, "rows": rows, "seconds": elapsed}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
