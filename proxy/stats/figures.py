"""What one finished request adds to the figures: named increments, summed per tenant and minute.

Every figure is a plain sum, so buckets from several replicas, minutes or tenants merge by
adding. Latency is kept as a histogram over fixed log-spaced bounds (`lt:i` whole request,
`lp:i` proxy-added) so that percentiles can be computed from any merge of buckets.
"""

from __future__ import annotations

import bisect
import logging
import math

from proxy.serving.accounting import Accounting
from proxy.stats.pricing import Pricing

log = logging.getLogger(__name__)

TIERS = ("reuse", "guided", "cold")

# 0.5 ms .. ~10 min, each bound 20% above the last: a percentile is within +-10% of the truth.
LATENCY_BOUNDS: tuple[float, ...] = tuple(0.0005 * 1.2**i for i in range(78))
TOTAL_LATENCY = "lt"
PROXY_LATENCY = "lp"

Increments = dict[str, float]


def latency_field(prefix: str, seconds: float) -> str:
    return f"{prefix}:{bisect.bisect_left(LATENCY_BOUNDS, max(0.0, seconds))}"


def bucket_value(index: int) -> float:
    """A representative value for histogram bucket `index`: the geometric middle of its bounds."""
    if index <= 0:
        return LATENCY_BOUNDS[0]
    if index >= len(LATENCY_BOUNDS):
        return LATENCY_BOUNDS[-1]
    return math.sqrt(LATENCY_BOUNDS[index - 1] * LATENCY_BOUNDS[index])


def add_into(target: Increments, more: Increments) -> None:
    for name, value in more.items():
        target[name] = target.get(name, 0.0) + value


def request_increments(account: Accounting, pricing: Pricing) -> Increments:
    """The figures one finished chat request adds (see docs/STATS.md for what each means)."""
    tier = account.decision.tier
    saved_tokens = account.saved_tokens
    saved_seconds = account.saved_seconds
    stopped_early = account.compute is not None  # a cold vote or refine saves against the fixed method
    if tier == "cold" and not stopped_early and (saved_tokens or saved_seconds):
        log.error("a cold request reported a saving (%s tokens); not counted", saved_tokens)
    if tier == "cold" and not stopped_early:
        saved_tokens, saved_seconds = 0, 0.0
    prompt = account.prompt_tokens
    completion = account.completion_tokens
    overspent_tokens = 0
    overspent_seconds = 0.0
    if tier == "guided":
        cold_tokens = account.decision.estimated_cold_tokens * account.fixed_units
        overspent_tokens = max(0, completion - cold_tokens)
        overspent_seconds = max(0.0, account.backend_seconds - account.decision.estimated_cold_seconds)
    esc_prompt = esc_completion = 0
    if account.escalated:
        # usage holds both calls, last_usage the retry: the difference is the cut-off first call.
        esc_prompt = max(0, prompt - int(account.last_usage.get("prompt_tokens") or 0))
        esc_completion = max(0, completion - int(account.last_usage.get("completion_tokens") or 0))
    proxy_seconds = max(0.0, account.total_seconds - account.backend_seconds)
    figures: Increments = {
        f"req:{tier}": 1,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "saved_tokens": saved_tokens,
        "saved_seconds": saved_seconds,
        "overspent_tokens": overspent_tokens,
        "overspent_seconds": overspent_seconds,
        "escalations": 1 if account.escalated else 0,
        "esc_prompt_tokens": esc_prompt,
        "esc_completion_tokens": esc_completion,
        "backend_seconds": account.backend_seconds,
        "total_seconds": account.total_seconds,
        "proxy_seconds": proxy_seconds,
        latency_field(TOTAL_LATENCY, account.total_seconds): 1,
        latency_field(PROXY_LATENCY, proxy_seconds): 1,
    } | compute_increments(account, saved_tokens)
    price = pricing.price_for(account.model)
    if price is not None:
        figures["priced_requests"] = 1
        figures["money_spent"] = price.cost(prompt, completion)
        net_completion = saved_tokens - overspent_tokens
        figures["money_saved"] = price.cost(0, net_completion) - price.cost(esc_prompt, 0)
    return {name: value for name, value in figures.items() if value}


def compute_increments(account: Accounting, saved_tokens: int) -> Increments:
    """Adaptive compute: samples or rounds used and allowed, and the tokens saved against the fixed method."""
    compute = account.compute
    if compute is None:
        return {}
    unit = "samples" if compute.method == "vote" else "rounds"
    return {
        f"{compute.method}_requests": 1,
        f"{unit}_used": compute.used,
        f"{unit}_allowed": compute.allowed,
        "refine_checks": compute.checks,
        "compute_saved_tokens": saved_tokens,
    }


def rating_increments(tier: str, rating: str) -> Increments:
    bad = 1 if rating == "bad" else 0
    return {f"rated:{tier}": 1, f"bad:{tier}": bad} if bad else {f"rated:{tier}": 1}


def audit_increments(agreed: bool) -> Increments:
    return {"audit_agree": 1} if agreed else {"audit_disagree": 1}


def verification_increments(outcome: str, tokens: int) -> Increments:
    return {f"verify_{outcome}": 1, "verify_tokens": max(0, tokens)}


def reflection_increments(prompt_tokens: int, completion_tokens: int, model: str, pricing: Pricing) -> Increments:
    prompt_tokens, completion_tokens = max(0, prompt_tokens), max(0, completion_tokens)
    figures: Increments = {"reflection_tokens": prompt_tokens + completion_tokens}
    price = pricing.price_for(model)
    if price is not None:
        figures["money_reflection"] = price.cost(prompt_tokens, completion_tokens)
    return figures
