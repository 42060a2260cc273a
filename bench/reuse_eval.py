"""How often the reuse decision serves true repeats and paraphrases, and how often a look-alike's answer.

On the labelled pairs of bench/data (built by bench/reuse_data.py; tune on the calibration half,
report the held-out half), in process: the decision's own code and the proxy's embedder, with
threshold curves for the decision and for similarity alone:

    python -m bench.reuse_eval offline --split heldout --png docs/img/reuse_tradeoff.png

With --verifier-url, the pairs the decision refuses in the unsure band (budget/reuse/equivalence.py)
are put to that verifier model as the proxy would, and the decision with the verifier is reported
too, swept over the verifier's P(Same) threshold (`--verifier-url embedded`: the bundled 1.5B
model, started as the proxy starts it).

Not here yet: the end-to-end run through the HTTP API (each pair isolated, and a support bot's
day in one scope); tests/test_reuse_decision.py checks the decision end to end on its own cases.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from budget.reuse.judge import Asked, Candidate, judge
from memory_store.scope import memory_key

DATA = Path(__file__).parent / "data"
RESULTS = Path(__file__).parent / "results"
SIMILARITY_ONLY = (0.85, 0.90, 0.95)
BUDGETS = (0.005, 0.01, 0.05)


@dataclass
class Pair:
    id: str
    kind: str  # "question" | "conversation"
    category: str
    domain: str
    label: str
    split: str
    a: list[dict[str, str]]
    b: list[dict[str, str]]

    @property
    def hit(self) -> bool:
        return self.label == "hit"


def _messages(side: Any) -> list[dict[str, str]]:
    return [{"role": "user", "content": side}] if isinstance(side, str) else list(side)


SPLITS = ("calibration", "heldout", "fresh")  # fresh: bench/data/reuse_seeds_fresh, written after the rules


def load_pairs(split: str | None) -> list[Pair]:
    pairs = []
    suffix = "_fresh" if split == "fresh" else ""
    for kind, name in (
        ("question", f"reuse_pairs{suffix}.jsonl"),
        ("conversation", f"reuse_conversations{suffix}.jsonl"),
    ):
        for line in (DATA / name).read_text().splitlines():
            row = json.loads(line)
            if split is None or row["split"] == split:
                a, b = _messages(row["a"]), _messages(row["b"])
                pairs.append(Pair(row["id"], kind, row["category"], row["domain"], row["label"], row["split"], a, b))
    return pairs


# -- offline: the decision in process ----------------------------------------------------------


@dataclass
class Scored:
    pair: Pair
    similarity: float
    verdicts: dict[float, bool] = field(default_factory=dict)  # proxy decision per folded_similarity
    verifiable: bool = False  # refused at the configured floor, in the unsure band
    p_same: float | None = None  # the verifier's word, when it was asked
    verify_seconds: float = 0.0
    verify_tokens: int = 0


def _asked(messages: list[dict[str, str]]) -> tuple[str, tuple[str, ...], str]:
    key = memory_key("bench", {"model": "m", "messages": messages})
    assert key is not None
    return key.question, key.context, key.context_fingerprint


def score(
    pairs: list[Pair],
    encode: Callable[[list[str]], np.ndarray],
    thresholds: Iterable[float],
    configured: float | None = None,
    verify_similarity: float | None = None,
) -> list[Scored]:
    sides = [(_asked(p.a), _asked(p.b)) for p in pairs]
    questions = sorted({side[0] for both in sides for side in both})
    vectors = dict(zip(questions, encode(questions), strict=True))
    scored = []
    for pair, ((qa, ca, fa), (qb, cb, fb)) in zip(pairs, sides, strict=True):
        similarity = float(np.dot(vectors[qa], vectors[qb]))
        item = Scored(pair, similarity)
        asked = Asked(qb, cb, fb, has_tools=False)
        candidate = Candidate(qa, ca, fa, similarity)
        for threshold in thresholds:
            item.verdicts[threshold] = judge(candidate, asked, threshold).reuse
        if configured is not None and verify_similarity is not None:
            item.verifiable = judge(candidate, asked, configured, True, verify_similarity).verifiable
        scored.append(item)
    return scored


def ask_pair(client: Any, stored: str, asked: str) -> tuple[float, int, float]:
    """(P(Same), tokens, seconds) of one pair, asked of the verifier at `client` as the proxy asks it."""
    from budget.reuse.equivalence import completion_p_same, equivalence_body

    started = time.perf_counter()
    reply = client.post("/chat/completions", json=equivalence_body(stored, asked, "reuse-verifier")).json()
    return completion_p_same(reply), int(reply["usage"]["total_tokens"]), time.perf_counter() - started


def ask_verifier(items: list[Scored], base_url: str, cache: dict[str, float]) -> None:
    """P(Same) for each verifiable pair, asked as the proxy asks (or from a probe's recorded answers)."""
    import httpx

    with httpx.Client(base_url=base_url, timeout=120) as client:
        for item in items:
            if not item.verifiable:
                continue
            if item.pair.id in cache:
                item.p_same = cache[item.pair.id]
                continue
            stored, asked = item.pair.a[-1]["content"], item.pair.b[-1]["content"]
            item.p_same, item.verify_tokens, item.verify_seconds = ask_pair(client, stored, asked)


VERIFIER_THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)


def with_verifier(item: Scored, configured: float, min_p_same: float) -> bool:
    return item.verdicts[configured] or (item.p_same is not None and item.p_same >= min_p_same)


def verifier_report(items: list[Scored], configured: float, min_p_same: float) -> dict[str, Any]:
    asked = [i for i in items if i.p_same is not None]
    timed = sorted(i.verify_seconds for i in asked if i.verify_seconds)
    curve = [(t, *rates(items, lambda s, t=t: with_verifier(s, configured, t))) for t in VERIFIER_THRESHOLDS]
    return {
        "min_p_same": min_p_same,
        "at_configured": as_rates(rates(items, lambda s: with_verifier(s, configured, min_p_same))),
        "curve": curve,
        "at_budget": {str(b): best_at_budget(curve, b) for b in BUDGETS},
        "per_category": per_category(items, lambda s: with_verifier(s, configured, min_p_same)),
        "calls": len(asked),
        "calls_share_of_pairs": round(len(asked) / max(1, len(items)), 4),
        "tokens_of_live_calls": sum(i.verify_tokens for i in asked),  # pairs from --verifier-cache: unknown
        "seconds_p50": timed[len(timed) // 2] if timed else None,
        "seconds_p99": timed[min(len(timed) - 1, int(len(timed) * 0.99))] if timed else None,
    }


def rates(items: list[Scored], served: Callable[[Scored], bool]) -> tuple[float, float]:
    """(share of hits served, share of traps served)."""
    hits = [i for i in items if i.pair.hit]
    traps = [i for i in items if not i.pair.hit]
    return (
        sum(map(served, hits)) / max(1, len(hits)),
        sum(map(served, traps)) / max(1, len(traps)),
    )


def as_rates(served: tuple[float, float]) -> dict[str, float]:
    return {"hits_served": served[0], "traps_served": served[1]}


def best_at_budget(curve: list[tuple[float, float, float]], budget: float) -> tuple[float, float] | None:
    """(hit share, threshold) of the most serving point whose trap share is within the budget."""
    within = [(hit, t) for t, hit, trap in curve if trap <= budget]
    return max(within) if within else None


def offline(args: argparse.Namespace) -> dict[str, Any]:
    from budget.policy import PolicyConfig
    from proxy.config import load_settings
    from proxy.container import load_encoder

    encoder = load_encoder(load_settings(environ={}))
    thresholds = [round(0.50 + 0.01 * i, 2) for i in range(51)]
    pairs = load_pairs(args.split)
    verifying = getattr(args, "verifier_url", None) is not None
    verify_similarity = PolicyConfig().verify_similarity if verifying else None
    scored = score(pairs, encoder.encode, thresholds, args.folded_similarity, verify_similarity)
    if verifying:
        cache = {r["id"]: r["p_same"] for path in args.verifier_cache for r in json.loads(path.read_text())["rows"]}
        ask_verifier(scored, args.verifier_url, cache)
    report: dict[str, Any] = {"split": args.split or "all", "pairs": len(pairs), "kinds": {}}
    for kind in ("question", "conversation"):
        items = [s for s in scored if s.pair.kind == kind]
        proxy_curve = [(t, *rates(items, lambda s, t=t: s.verdicts[t])) for t in thresholds]
        sim_curve = [(t, *rates(items, lambda s, t=t: s.similarity >= t)) for t in thresholds]
        chosen = args.folded_similarity

        def at_chosen(s: Scored, chosen: float = chosen) -> bool:
            return s.verdicts[chosen]

        report["kinds"][kind] = {
            "pairs": len(items),
            "proxy_at_configured": as_rates(rates(items, at_chosen)),
            "proxy_at_budget": {str(b): best_at_budget(proxy_curve, b) for b in BUDGETS},
            "similarity_only": {
                str(t): as_rates(rates(items, lambda s, t=t: s.similarity >= t)) for t in SIMILARITY_ONLY
            },
            "similarity_only_at_budget": {str(b): best_at_budget(sim_curve, b) for b in BUDGETS},
            "per_category": per_category(items, at_chosen),
            "curves": {"proxy": proxy_curve, "similarity": sim_curve},
        }
        if verifying:
            report["kinds"][kind]["with_verifier"] = verifier_report(items, chosen, args.min_p_same)
    if args.misses:
        show_misses(scored, args.folded_similarity, args.misses)
    return report


def per_category(items: list[Scored], served: Callable[[Scored], bool]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Scored]] = defaultdict(list)
    for item in items:
        groups[item.pair.category].append(item)
    return {
        name: {
            "label": group[0].pair.label,
            "pairs": len(group),
            "served": round(sum(map(served, group)) / len(group), 4),
        }
        for name, group in sorted(groups.items())
    }


def show_misses(scored: list[Scored], threshold: float, limit: int) -> None:
    wrong = [s for s in scored if s.verdicts[threshold] != s.pair.hit]
    random.Random(7).shuffle(wrong)
    for item in wrong[:limit]:
        what = "MISSED HIT" if item.pair.hit else "SERVED TRAP"
        print(f"{what} {item.pair.category} sim={item.similarity:.3f}\n  a: {item.pair.a}\n  b: {item.pair.b}")


def print_offline(report: dict[str, Any]) -> None:
    print(f"\nsplit: {report['split']}")
    for kind, r in report["kinds"].items():
        at = r["proxy_at_configured"]
        print(f"\n{kind}s: {r['pairs']} pairs")
        print(
            f"  proxy decision (configured): hits served {at['hits_served']:.1%}, traps served {at['traps_served']:.2%}"
        )
        for budget in BUDGETS:
            p, s = r["proxy_at_budget"][str(budget)], r["similarity_only_at_budget"][str(budget)]
            fmt = lambda v: f"{v[0]:.1%} (threshold {v[1]})" if v else "none"  # noqa: E731
            print(f"  at {budget:.1%} traps: proxy {fmt(p)} | similarity only {fmt(s)}")
        for t, v in r["similarity_only"].items():
            print(f"  similarity >= {t}: hits served {v['hits_served']:.1%}, traps served {v['traps_served']:.2%}")
        print("  per category (share served):")
        for name, c in r["per_category"].items():
            print(f"    {name:32s} {c['label']:5s} {c['pairs']:4d}  {c['served']:.1%}")
        verified = r.get("with_verifier")
        if verified:
            at = verified["at_configured"]
            print(
                f"  with the verifier (P(Same) >= {verified['min_p_same']}): hits served {at['hits_served']:.1%}, "
                f"traps served {at['traps_served']:.2%}; {verified['calls']} calls "
                f"({verified['calls_share_of_pairs']:.1%} of pairs), "
                f"{verified['tokens_of_live_calls']} tokens in live calls, "
                f"p50 {verified['seconds_p50']} s, p99 {verified['seconds_p99']} s"
            )
            for t, hit, trap in verified["curve"]:
                print(f"    P(Same) >= {t}: hits served {hit:.1%}, traps served {trap:.2%}")
            print("    per category with the verifier (share served):")
            for name, c in verified["per_category"].items():
                print(f"      {name:30s} {c['label']:5s} {c['pairs']:4d}  {c['served']:.1%}")


def plot(reports: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, kind in zip(axes, ("question", "conversation"), strict=True):
        for report in reports:
            curves = report["kinds"][kind]["curves"]
            for name, style in (("proxy", "-"), ("similarity", "--")):
                xs = [trap * 100 for _, _, trap in curves[name]]
                ys = [hit * 100 for _, hit, _ in curves[name]]
                label = f"{'proxy decision' if name == 'proxy' else 'similarity only'} ({report['split']})"
                marker = {"marker": "o", "markersize": 4, "clip_on": False} if name == "proxy" else {}
                axis.plot(xs, ys, style, label=label, **marker)
        axis.axvline(1.0, color="grey", linewidth=0.8)
        axis.set_xscale("symlog", linthresh=1)
        axis.set_xlim(0, 100)
        axis.set_ylim(0, 100)
        axis.set_xlabel("look-alike traps served from memory (%)")
        axis.set_ylabel("true repeats and paraphrases served (%)")
        axis.set_title(f"{kind} pairs: sweeping the similarity threshold")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reuse_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("offline",))
    parser.add_argument("--split", choices=SPLITS, default="heldout")
    parser.add_argument("--folded-similarity", type=float, default=None, help="default: the configured value")
    parser.add_argument("--misses", type=int, default=0, help="offline: print this many wrong decisions")
    parser.add_argument("--png", type=Path, default=None, help="offline: write the trade-off chart here")
    parser.add_argument("--verifier-url", default=None, help="put the unsure band to this verifier (.../v1)")
    parser.add_argument("--min-p-same", type=float, default=None, help="default: the configured value")
    parser.add_argument("--verifier-cache", type=Path, nargs="*", default=[],
                        help="bench.verifier_probe outputs: their P(Same) instead of asking again")  # fmt: skip
    args = parser.parse_args(argv)
    if args.min_p_same is None:
        from proxy.config import ReuseVerifierSettings

        args.min_p_same = ReuseVerifierSettings().min_p_same
    if args.folded_similarity is None:
        from budget.policy import PolicyConfig

        args.folded_similarity = PolicyConfig().folded_similarity
    started = time.perf_counter()
    server = None
    if args.verifier_url == "embedded":
        from proxy.config import load_settings
        from proxy.container import start_embedded_verifier

        server, args.verifier_url = start_embedded_verifier(load_settings(environ={}))
    try:
        report = offline(args)
    finally:
        if server is not None:
            server.stop()
    print_offline(report)
    if args.png:
        other = offline(argparse.Namespace(**{**vars(args), "split": "calibration", "misses": 0, "verifier_url": None}))
        plot([other, report] if args.split != "calibration" else [report], args.png)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"reuse-{args.mode}-{args.split}{'-verified' if args.verifier_url else ''}.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"\n{time.perf_counter() - started:.0f} s; results in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
