"""When to stop drawing samples: the Beta stopping rule of Adaptive-Consistency (arXiv 2305.11860).

After each wave the counts of the two most frequent answers, v1 and v2, give a posterior on which
is the more likely: p1 / (p1 + p2) ~ Beta(v1 + 1, v2 + 1). Sampling stops once
P(p1 > p2) >= `confidence`. Chosen over ESC's fixed agreement window (arXiv 2401.10480) because
it also stops on a clear majority with some dissent (5 against 1), works with waves of any size,
and its threshold is a probability that memory can lower on familiar questions; an ESC window of
w agreeing samples is the special case v2 = 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb


def majority_confidence(counts: Sequence[int]) -> float:
    """P(the leading answer is more likely than the runner-up), under a uniform prior."""
    ranked = sorted((c for c in counts if c > 0), reverse=True)
    if not ranked:
        return 0.0
    a = ranked[0] + 1
    b = (ranked[1] if len(ranked) > 1 else 0) + 1
    # For integer a, b: P(X <= 1/2) for X ~ Beta(a, b) is P(Binomial(a + b - 1, 1/2) >= a).
    trials = a + b - 1
    at_most_half = sum(comb(trials, j) for j in range(a, trials + 1)) / 2**trials
    return 1.0 - at_most_half


def should_stop(counts: Sequence[int], confidence: float) -> bool:
    return majority_confidence(counts) >= confidence


def next_wave(counts: Sequence[int], confidence: float, remaining: int) -> int:
    """The fewest further samples that could end the vote (all agreeing with the leader), at most `remaining`.

    Drawing that many at once keeps latency down (they run concurrently) without drawing a sample
    the rule could not use; when no number within `remaining` could end it, all of them are drawn.
    """
    ranked = sorted((c for c in counts if c > 0), reverse=True) or [0]
    rest = list(ranked[1:])
    for extra in range(1, remaining + 1):
        if should_stop([ranked[0] + extra, *rest], confidence):
            return extra
    return remaining


def no_consensus(counts: Sequence[int], futility_after: int | None) -> bool:
    """`futility_after` or more samples answered and no two answers agree: the vote is a lottery.

    More samples rarely find a majority there, and when they do it is rarely right (calibration in
    docs/ADAPTIVE_COMPUTE.md); the vote stops and returns the earliest answer. Abstentions (cut-off
    or empty samples) do not count.
    """
    return futility_after is not None and sum(counts) >= futility_after and max(counts, default=0) <= 1


def unsure_split(counts: Sequence[int], sample_logprobs: Sequence[float | None], unsure_below: float | None) -> bool:
    """Two or more samples answered, no two agree, and none was sure of itself (every mean token
    log-probability below `unsure_below`): the futility stop, earlier, where the model says it is guessing.

    A sample with no log-probabilities counts as sure (no evidence, no early stop). Calibration in
    docs/ADAPTIVE_COMPUTE.md.
    """
    if unsure_below is None or not no_consensus(counts, 2):
        return False
    return all(lp is not None and lp < unsure_below for lp in sample_logprobs)


def futile(
    counts: Sequence[int],
    sample_logprobs: Sequence[float | None],
    futility_after: int | None,
    unsure_below: float | None,
) -> bool:
    """Either futility stop: `no_consensus` after `futility_after` answers, or `unsure_split`."""
    return no_consensus(counts, futility_after) or unsure_split(counts, sample_logprobs, unsure_below)
