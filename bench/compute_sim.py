"""The vote's stopping rule replayed offline over recorded samples: calibrate without a backend.

    python -m bench.compute_sim bench/results/compute-calib-seed2-t03.json [--orders 300] \\
        [--confidence 0.80] [--confident-logprob -0.075] [--futility 3 4 5 none] \\
        [--unsure-split -0.15 none] [--levels S0 S4] [--pool] \\
        [--live-trials 2000] [--sample-fit 1000]

Takes the `fixed8-direct` records of a bench.compute_replay run (each question's 8 samples: final
answer, finish reason, tokens and, when recorded, the mean token log-probability), and replays
proxy/serving/vote.py's loop over many random orders of each question's samples: the first sample
alone when the confident-sample gate is on, then `stopping.next_wave` waves until `stopping.should_stop`,
the futility stops (`stopping.no_consensus`, `stopping.unsure_split`) or all 8 are drawn; ties go to
the earliest answer; a cut-off sample abstains. Prints, per futility setting, accuracy and tokens
against the majority of 8.

The baseline is the majority of the same 8 in the same order (ties to its earliest answer), averaged
over the orders: the first k samples of a random order of 8 independent samples are k independent
samples, so the replayed vote is distributed as a live vote and the majority as the fixed method, and
`accuracy_points` is an unbiased estimate of their difference without the luck of one live draw of
each; `accuracy_points_se` is its standard error over the questions. (The recorded run's own
majority, `majority_of_8_recorded`, is one tie-break among those orders.)

`--live-trials` also simulates that many live runs of the same questions (vote and fixed method each
drawing afresh, with replacement, from the recorded samples) and prints the spread of their pooled
accuracy difference beside the recorded live runs' own (`vote-nomem` against `fixed8-direct`): whether
a live shortfall is more than one run's luck. `--sample-fit` checks that the live vote's samples are
distributed as the fixed run's (see `sample_fit`), which is what makes the replay stand for the live vote.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from bench.replay_dataset import is_correct
from budget.compute.answers import AnswerFormat
from budget.compute.stopping import futile, next_wave, should_stop
from proxy.serving.vote import Ballot


@dataclass(frozen=True)
class Sample:
    key: str | None  # None: abstained (cut off or no answer)
    tokens: int
    mean_logprob: float | None


def samples_of(record: dict[str, Any]) -> list[Sample]:
    finals = record["finals"]
    finish = record.get("finish") or ["stop"] * len(finals)
    tokens = record.get("sample_tokens") or [record["completion_tokens"] / len(finals)] * len(finals)
    confidence = record.get("confidence") or [None] * len(finals)
    return [
        Sample(
            key=final if final is not None and reason == "stop" else None,
            tokens=int(count),
            mean_logprob=(trace or {}).get("mean"),
        )
        for final, reason, count, trace in zip(finals, finish, tokens, confidence, strict=True)
    ]


def replay_vote(
    samples: Sequence[Sample],
    confidence: float,
    gate: float | None,
    futility: int | None,
    unsure_below: float | None = None,
) -> tuple[str | None, int, int, str]:
    """One vote over `samples` in their order: (chosen key, samples drawn, tokens, stop reason).

    The tally and its tie rule are the proxy's own `Ballot`; only the drawing is replayed here.
    """
    ballot = Ballot(answer=AnswerFormat(), similarity=0.0)
    stop = "max_samples"
    while len(ballot.keys) < len(samples):
        first = not ballot.keys
        drawn = len(ballot.keys)
        wave = 1 if first and gate is not None else next_wave(ballot.counts(), confidence, len(samples) - drawn)
        ballot.keys.extend(s.key for s in samples[drawn : drawn + wave])
        lead = samples[0]
        if (
            first
            and gate is not None
            and lead.key is not None
            and lead.mean_logprob is not None
            and lead.mean_logprob >= gate
        ):
            stop = "confident_sample"
            break
        if should_stop(ballot.counts(), confidence):
            stop = "agreement"
            break
        answered = [s.mean_logprob for s in samples[: len(ballot.keys)] if s.key is not None]
        if futile(ballot.counts(), answered, futility, unsure_below):
            stop = "no_consensus"
            break
    return _chosen(ballot), len(ballot.keys), sum(s.tokens for s in samples[: len(ballot.keys)]), stop


def majority(samples: Sequence[Sample]) -> str | None:
    """The fixed method's answer: the most frequent of all `samples`, ties to the earliest."""
    return _chosen(Ballot(answer=AnswerFormat(), similarity=0.0, keys=[s.key for s in samples]))


def _chosen(ballot: Ballot) -> str | None:
    return ballot.keys[ballot.winner()[0]] if ballot.tally() else None


def simulate(
    records: Sequence[dict[str, Any]],
    orders: int,
    confidence: float,
    gate: float | None,
    futility: int | None,
    unsure_below: float | None = None,
    seed: int = 0,
) -> dict[str, float]:
    rng = random.Random(seed)
    right = fixed_right = drawn = tokens = 0.0
    stops: Counter[str] = Counter()
    margins = []  # per question: (vote right) - (majority right), averaged over the orders
    for record in records:
        samples = samples_of(record)
        margin = 0
        for _ in range(orders):
            order = rng.sample(samples, len(samples))
            chosen, n, spent, stop = replay_vote(order, confidence, gate, futility, unsure_below)
            vote_right = is_correct(chosen or "", record["gold"])
            majority_right = is_correct(majority(order) or "", record["gold"])
            right += vote_right
            fixed_right += majority_right
            margin += vote_right - majority_right
            drawn += n
            tokens += spent
            stops[stop] += 1
        margins.append(margin / orders)
    runs = len(records) * orders
    full_tokens = sum(sum(s.tokens for s in samples_of(r)) for r in records)
    return {
        "accuracy": right / runs,
        "majority_of_8": fixed_right / runs,
        "accuracy_points": 100 * (right - fixed_right) / runs,
        "accuracy_points_se": 100 * standard_error(margins),
        "majority_of_8_recorded": sum(bool(r["correct"]) for r in records) / len(records),
        "samples": drawn / runs,
        "tokens_saved_pct": 100 * (1 - (tokens / orders) / full_tokens),
        **{f"stop_{k}": v / runs for k, v in sorted(stops.items())},
    }


def live_spread(
    records: Sequence[dict[str, Any]],
    trials: int,
    confidence: float,
    gate: float | None,
    futility: int | None,
    unsure_below: float | None = None,
    seed: int = 0,
) -> list[float]:
    """The pooled (vote right) - (fixed n=8 right), in points, of `trials` simulated live runs.

    A live run draws the vote's samples and the fixed method's 8 afresh and independently: here both
    are drawn with replacement from each question's recorded samples. The spread of these differences
    is how far one live run of these questions may land from the expected difference by luck alone.
    """
    rng = random.Random(seed)
    questions = [(samples_of(record), record["gold"]) for record in records]
    differences = []
    for _ in range(trials):
        margin = 0
        for samples, gold in questions:
            chosen = replay_vote(rng.choices(samples, k=len(samples)), confidence, gate, futility, unsure_below)[0]
            fixed = majority(rng.choices(samples, k=len(samples)))
            margin += is_correct(chosen or "", gold) - is_correct(fixed or "", gold)
        differences.append(100 * margin / len(records))
    return differences


def spread_summary(differences: Sequence[float], observed: float | None) -> dict[str, float]:
    ranked = sorted(differences)
    mean = sum(ranked) / len(ranked)
    summary = {
        "expected_points": mean,
        "sd_points": (sum((d - mean) ** 2 for d in ranked) / len(ranked)) ** 0.5,
        "p05_points": ranked[int(0.05 * (len(ranked) - 1))],
        "p95_points": ranked[int(0.95 * (len(ranked) - 1))],
    }
    if observed is not None:
        summary["observed_live_points"] = observed
        summary["share_at_or_below_observed"] = sum(d <= observed + 1e-9 for d in ranked) / len(ranked)
    return summary


def observed_live_points(paths: Sequence[str], levels: Sequence[str] | None) -> float | None:
    """(vote-nomem right) - (fixed8-direct right) of the recorded live runs, in points; None without both."""
    fixed = [r for path in paths for r in records_of(path, "fixed8-direct", levels)]
    vote = [r for path in paths for r in records_of(path, "vote-nomem", levels)]
    if not fixed or len(vote) != len(fixed):
        return None
    return 100 * (sum(bool(r["correct"]) for r in vote) - sum(bool(r["correct"]) for r in fixed)) / len(fixed)


def vote_tally(header: str | None) -> dict[str, int]:
    """An `x-speedup-votes` header as recorded: key=count pairs, keys URL-quoted."""
    pairs = (part.rsplit("=", 1) for part in (header or "").split(",") if part)
    return {unquote(key): int(count) for key, count in pairs}


def sample_fit(
    paths: Sequence[str],
    levels: Sequence[str] | None,
    trials: int,
    confidence: float,
    futility: int | None,
    seed: int = 0,
) -> dict[str, float]:
    """Are the live vote's samples drawn as the fixed method's were? The mean log-likelihood of the
    live vote samples (each one's answer, or its abstention) under the fixed run's answer shares for
    that question (add-half smoothed, one more class for answers the fixed run never gave), against
    the same statistic of `trials` simulated votes drawing from those shares with the same rule (without
    its log-probability gates, as shipped).

    Per sample, so that how long the votes ran does not weigh in; a share near 0 says the live samples
    give answers the fixed run made rarely (a request unlike the direct one), near 1 that they agree
    with the fixed run's majority more than independent draws would.
    """
    rng = random.Random(seed)
    observed, observed_n = 0.0, 0
    simulated, simulated_n = [0.0] * trials, [0] * trials
    for path in paths:
        fixed = {r["index"]: r for r in records_of(path, "fixed8-direct", levels)}
        for vote in records_of(path, "vote-nomem", levels):
            keys = [s.key for s in samples_of(fixed[vote["index"]])]
            classes: list[str | None] = [*sorted({k for k in keys if k is not None}), "<other>", None]
            share = {c: (keys.count(c) + 0.5) / (len(keys) + 0.5 * len(classes)) for c in classes}
            tally = vote_tally(vote["votes"])
            abstained = vote["units"] - sum(tally.values())
            observed += abstained * math.log(share[None]) + sum(
                count * math.log(share.get(key, share["<other>"])) for key, count in tally.items()
            )
            observed_n += vote["units"]
            weights = [share[c] for c in classes]
            for trial in range(trials):
                draws = rng.choices(classes, weights, k=len(keys))
                ballot = [Sample(f"<other>{i}" if c == "<other>" else c, 0, None) for i, c in enumerate(draws)]
                drawn = replay_vote(ballot, confidence, None, futility)[1]
                simulated[trial] += sum(math.log(share[c]) for c in draws[:drawn])
                simulated_n[trial] += drawn
    means = sorted(total / max(n, 1) for total, n in zip(simulated, simulated_n, strict=True))
    live = observed / max(observed_n, 1)
    return {
        "live_mean_loglik": live,
        "simulated_median": means[trials // 2],
        "share_at_or_below": sum(m <= live for m in means) / trials,
    }


def records_of(path: str, pass_name: str, levels: Sequence[str] | None) -> list[dict[str, Any]]:
    with open(path) as handle:
        return [
            r
            for r in json.load(handle)["records"]
            if r["pass"] == pass_name and (levels is None or r["level"] in levels)
        ]


def standard_error(values: Sequence[float]) -> float:
    """Of the mean over questions: how far another set of such questions could move the estimate."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values)) ** 0.5


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="bench.compute_replay result files")
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--confidence", type=float, default=0.80)
    parser.add_argument("--confident-logprob", type=float, default=None)
    parser.add_argument("--futility", nargs="+", default=["none"], help="futility_after values; 'none': off")
    parser.add_argument("--unsure-split", nargs="+", default=["none"], help="unsure_split_logprob values; 'none': off")
    parser.add_argument("--levels", nargs="+", default=None)
    parser.add_argument("--pool", action="store_true", help="one simulation over all runs' questions")
    parser.add_argument(
        "--sample-fit",
        type=int,
        default=0,
        help="check the live vote's samples against the fixed run's with this many trials",
    )
    parser.add_argument(
        "--live-trials", type=int, default=0, help="also simulate this many live runs: the spread one run has by luck"
    )
    args = parser.parse_args(argv)
    sources = {" + ".join(args.runs): list(args.runs)} if args.pool else {path: [path] for path in args.runs}
    for name, paths in sources.items():
        records = [r for path in paths for r in records_of(path, "fixed8-direct", args.levels)]
        observed = observed_live_points(paths, args.levels) if args.live_trials else None
        print(f"{name}: {len(records)} questions, {args.orders} orders each")
        for value in args.futility:
            for unsure in args.unsure_split:
                futility = None if value == "none" else int(value)
                unsure_below = None if unsure == "none" else float(unsure)
                result = simulate(records, args.orders, args.confidence, args.confident_logprob, futility, unsure_below)
                cells = " ".join(f"{k}={v:.3f}" for k, v in result.items())
                print(f"  futility={value:>4} unsure_split={unsure:>6}: {cells}")
                if args.live_trials:
                    differences = live_spread(
                        records, args.live_trials, args.confidence, args.confident_logprob, futility, unsure_below
                    )
                    spread = spread_summary(differences, observed)
                    print("    one live run: " + " ".join(f"{k}={v:.3f}" for k, v in spread.items()))
                if args.sample_fit:
                    fit = sample_fit(paths, args.levels, args.sample_fit, args.confidence, futility)
                    print("    live samples vs fixed: " + " ".join(f"{k}={v:.3f}" for k, v in fit.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
