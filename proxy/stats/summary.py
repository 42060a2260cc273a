"""Turn summed figures into the /v1/speedup/stats answer: totals, time series and percentiles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from budget.reuse.audit import wilson
from proxy.stats.figures import LATENCY_BOUNDS, PROXY_LATENCY, TIERS, TOTAL_LATENCY, Increments, add_into, bucket_value
from proxy.stats.store import Rows

QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}


@dataclass(frozen=True)
class Window:
    name: str
    minutes: int
    step_minutes: int


WINDOWS = {
    "1h": Window("1h", 60, 1),
    "24h": Window("24h", 24 * 60, 15),
    "7d": Window("7d", 7 * 24 * 60, 60),
}


def span(window: Window, now_s: float) -> tuple[int, int]:
    """[start, end) in minutes: steps aligned to their size, the last one holding the current minute."""
    end = int(now_s // 60) + 1
    last_step = (end - 1) // window.step_minutes * window.step_minutes
    start = last_step - (window.minutes // window.step_minutes - 1) * window.step_minutes
    return start, end


Histogram = list[tuple[int, float]]  # (bucket index, count), by index


def histogram(figures: Increments, prefix: str) -> Histogram:
    start = prefix + ":"
    return sorted((int(name[len(start) :]), value) for name, value in figures.items() if name.startswith(start))


def quantile(counts: Histogram, q: float) -> float | None:
    total = sum(value for _, value in counts)
    if total <= 0:
        return None
    seen = 0.0
    for index, value in counts:
        seen += value
        if seen >= q * total:
            return round(bucket_value(index), 6)
    return LATENCY_BOUNDS[-1]


def percentile(figures: Increments, prefix: str, q: float) -> float | None:
    return quantile(histogram(figures, prefix), q)


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole else None


def _latency(figures: Increments) -> dict[str, dict[str, float | None]]:
    result = {}
    for kind, prefix in (("total", TOTAL_LATENCY), ("proxy_added", PROXY_LATENCY)):
        counts = histogram(figures, prefix)
        result[kind] = {name: quantile(counts, q) for name, q in QUANTILES.items()}
    return result


def _audit(f: Increments) -> dict[str, Any]:
    """Reuses checked against a fresh answer: counts, the false-reuse rate and its 95% upper bound."""
    agree, disagree = int(f.get("audit_agree", 0)), int(f.get("audit_disagree", 0))
    trials = agree + disagree
    return {
        "agreements": agree,
        "disagreements": disagree,
        "false_reuse_rate": _ratio(disagree, trials),
        "upper_bound": round(wilson(disagree, trials)[1], 6) if trials else None,
    }


def _verification(f: Increments) -> dict[str, Any]:
    """Unsure-band pairs put to the reuse verifier: how many it served, and its tokens (in reflection_tokens too)."""
    same, different, errors = (int(f.get(f"verify_{o}", 0)) for o in ("same", "different", "error"))
    return {
        "checks": same + different + errors,
        "same": same,
        "different": different,
        "errors": errors,
        "tokens": int(f.get("verify_tokens", 0)),
    }


def _adaptive(f: Increments) -> dict[str, Any]:
    """Votes and refines: what they used of what the clients allowed, and what stopping early saved."""
    summary: dict[str, Any] = {"saved_tokens": int(f.get("compute_saved_tokens", 0))}
    for method, unit in (("vote", "samples"), ("refine", "rounds")):
        used, allowed = int(f.get(f"{unit}_used", 0)), int(f.get(f"{unit}_allowed", 0))
        summary[method] = {
            "requests": int(f.get(f"{method}_requests", 0)),
            f"{unit}_used": used,
            f"{unit}_allowed": allowed,
            "saved_share": _ratio(allowed - used, allowed),
        }
    summary["refine"]["checks"] = int(f.get("refine_checks", 0))
    return summary


def net_tokens(f: Increments) -> float:
    return (
        f.get("saved_tokens", 0)
        - f.get("overspent_tokens", 0)
        - f.get("esc_prompt_tokens", 0)
        - f.get("reflection_tokens", 0)
    )


def net_seconds(f: Increments) -> float:
    return f.get("saved_seconds", 0) - f.get("overspent_seconds", 0) - f.get("proxy_seconds", 0)


def totals(f: Increments, priced: bool) -> dict[str, Any]:
    requests = {tier: int(f.get(f"req:{tier}", 0)) for tier in TIERS}
    requests["total"] = sum(requests.values())
    rated_reuse = int(f.get("rated:reuse", 0))
    bad_reuse = int(f.get("bad:reuse", 0))
    money = None
    if priced:
        money = {
            "spent": round(f.get("money_spent", 0.0) + f.get("money_reflection", 0.0), 6),
            "saved": round(f.get("money_saved", 0.0), 6),
            "reflection": round(f.get("money_reflection", 0.0), 6),
            "net_saved": round(f.get("money_saved", 0.0) - f.get("money_reflection", 0.0), 6),
            "priced_requests": int(f.get("priced_requests", 0)),
        }
    return {
        "requests": requests,
        "backend_tokens": {
            "prompt": int(f.get("prompt_tokens", 0)),
            "completion": int(f.get("completion_tokens", 0)),
            "total": int(f.get("prompt_tokens", 0) + f.get("completion_tokens", 0)),
        },
        "saved_tokens": int(f.get("saved_tokens", 0)),
        "saved_seconds": round(f.get("saved_seconds", 0.0), 3),
        "overspent_tokens": int(f.get("overspent_tokens", 0)),
        "overspent_seconds": round(f.get("overspent_seconds", 0.0), 3),
        "escalations": int(f.get("escalations", 0)),
        "escalation_tokens": {
            "prompt": int(f.get("esc_prompt_tokens", 0)),
            "completion": int(f.get("esc_completion_tokens", 0)),
        },
        "reflection_tokens": int(f.get("reflection_tokens", 0)),
        "proxy_added_seconds": round(f.get("proxy_seconds", 0.0), 3),
        "net_saved_tokens": int(net_tokens(f)),
        "net_saved_seconds": round(net_seconds(f), 3),
        "money": money,
        "reuse_rate": _ratio(requests["reuse"], requests["total"]),
        "ratings": {"rated_reuse": rated_reuse, "bad_reuse": bad_reuse},
        "bad_rating_rate": _ratio(bad_reuse, rated_reuse),
        "reuse_audit": _audit(f),
        "reuse_verification": _verification(f),
        "adaptive_compute": _adaptive(f),
        "latency_seconds": _latency(f),
    }


def series(rows: Rows, start: int, end: int, step: int, priced: bool) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {
        name: []
        for name in (
            "t",
            "reuse",
            "guided",
            "cold",
            "prompt_tokens",
            "completion_tokens",
            "saved_tokens",
            "net_saved_tokens",
            "saved_seconds",
            "net_saved_seconds",
            "total_p50",
            "total_p90",
            "total_p99",
            "proxy_p50",
            "proxy_p90",
            "proxy_p99",
        )
    }
    if priced:
        out["money_saved"] = []
    for minute in range(start, end, step):
        f = rows.get(minute, {})
        out["t"].append(minute * 60)
        for tier in TIERS:
            out[tier].append(int(f.get(f"req:{tier}", 0)))
        out["prompt_tokens"].append(int(f.get("prompt_tokens", 0)))
        out["completion_tokens"].append(int(f.get("completion_tokens", 0)))
        out["saved_tokens"].append(int(f.get("saved_tokens", 0)))
        out["net_saved_tokens"].append(int(net_tokens(f)))
        out["saved_seconds"].append(round(f.get("saved_seconds", 0.0), 3))
        out["net_saved_seconds"].append(round(net_seconds(f), 3))
        latency = _latency(f)
        for name in QUANTILES:
            out[f"total_{name}"].append(latency["total"][name])
            out[f"proxy_{name}"].append(latency["proxy_added"][name])
        if priced:
            out["money_saved"].append(round(f.get("money_saved", 0.0) - f.get("money_reflection", 0.0), 6))
    return out


def merge(rows: Rows) -> Increments:
    merged: Increments = {}
    for figures in rows.values():
        add_into(merged, figures)
    return merged
