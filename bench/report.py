"""Per-level summary of direct-vs-proxy replay records.

A *record* is a mapping (or pydantic model / dataclass) describing one chat completion call:

* ``pass``: ``"direct"`` (straight to the backend) or ``"proxy"`` (through speedup-proxy);
* ``level``: ``"S0"`` .. ``"S4"``;
* ``correct``: bool;
* ``completion_tokens``: int or None (``usage.completion_tokens``);
* ``latency_s``: float seconds or None;
* ``tier``: ``"reuse" | "guided" | "cold"`` or None (``x-speedup-tier``, proxy pass only);
* optional ``saved_tokens`` (``x-speedup-saved-tokens``) and ``error``.

:func:`format_level_table` renders one row per level, plus a combined ``S1-S3`` row, plus the
count of reuse answers at S3 (which must be zero: S3 is a different instance).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

LEVELS: tuple[str, ...] = ("S0", "S1", "S2", "S3", "S4")
COMBINED: dict[str, tuple[str, ...]] = {"S1-S3": ("S1", "S2", "S3")}
TIERS: tuple[str, ...] = ("reuse", "guided", "cold")


def _as_dict(rec: Any) -> Mapping[str, Any]:
    if isinstance(rec, Mapping):
        return rec
    if hasattr(rec, "model_dump"):
        return rec.model_dump()
    if dataclasses.is_dataclass(rec) and not isinstance(rec, type):
        return dataclasses.asdict(rec)
    return vars(rec)


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _pass_stats(recs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    toks = [r["completion_tokens"] for r in recs if r.get("completion_tokens") is not None]
    lats = [r["latency_s"] for r in recs if r.get("latency_s") is not None]
    return {
        "n": len(recs),
        "correct": sum(1 for r in recs if r.get("correct")),
        "accuracy": (sum(1 for r in recs if r.get("correct")) / len(recs)) if recs else None,
        "completion_tokens": sum(toks) if recs else None,
        "mean_latency_s": _mean(lats),
        "errors": sum(1 for r in recs if r.get("error")),
    }


def _row(name: str, levels: Iterable[str], records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    levels = set(levels)
    direct = [r for r in records if r.get("level") in levels and r.get("pass") == "direct"]
    proxy = [r for r in records if r.get("level") in levels and r.get("pass") == "proxy"]
    d, p = _pass_stats(direct), _pass_stats(proxy)
    # Only meaningful when every call of both passes reported usage (a failed call has none).
    complete = all(r.get("completion_tokens") is not None for r in direct + proxy)
    reduction = None
    if direct and proxy and complete and d["completion_tokens"]:
        reduction = 100.0 * (d["completion_tokens"] - p["completion_tokens"]) / d["completion_tokens"]
    tiers = Counter(str(r.get("tier") or "none") for r in proxy)
    saved = [int(r["saved_tokens"]) for r in proxy if r.get("saved_tokens") is not None]
    return {
        "level": name,
        "n": max(len(direct), len(proxy)),
        "direct": d,
        "proxy": p,
        "token_reduction_pct": reduction,
        "tiers": {t: tiers.get(t, 0) for t in TIERS} | {k: v for k, v in tiers.items() if k not in TIERS},
        "proxy_saved_tokens_header": sum(saved) if saved else None,
    }


def summarize_levels(records: Iterable[Any]) -> list[dict[str, Any]]:
    """One summary dict per level S0..S4 (only levels present) plus the combined S1-S3 row."""
    recs = [_as_dict(r) for r in records]
    present = {r.get("level") for r in recs}
    rows = [_row(lv, [lv], recs) for lv in LEVELS if lv in present]
    for name, lvs in COMBINED.items():
        if present & set(lvs):
            rows.append(_row(name, lvs, recs))
    return rows


def reuse_count(records: Iterable[Any], level: str = "S3") -> int:
    """Proxy answers served by reuse at ``level`` (at S3 this must be 0)."""
    return sum(
        1
        for r in map(_as_dict, records)
        if r.get("pass") == "proxy" and r.get("level") == level and r.get("tier") == "reuse"
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _num(x: float | int | None, fmt: str = "{}") -> str:
    return "-" if x is None else fmt.format(x)


def format_level_table(records: Iterable[Any]) -> str:
    """Plain-text table: per level n, accuracies, token sums, reduction, latencies, tier counts."""
    recs = [_as_dict(r) for r in records]
    rows = summarize_levels(recs)
    header = (
        "level", "n", "acc dir", "acc prx", "tok dir", "tok prx", "tok red",
        "lat dir", "lat prx", "tiers reuse/guided/cold",
    )
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        d, p = row["direct"], row["proxy"]
        tiers = row["tiers"]
        tier_txt = "/".join(str(tiers.get(t, 0)) for t in TIERS)
        extra = {k: v for k, v in tiers.items() if k not in TIERS}
        if extra:
            tier_txt += " (" + " ".join(f"{k}:{v}" for k, v in sorted(extra.items())) + ")"
        if not p["n"]:
            tier_txt = "-"
        lines.append((
            row["level"],
            str(row["n"]),
            _pct(d["accuracy"]),
            _pct(p["accuracy"]),
            _num(d["completion_tokens"] if d["n"] else None),
            _num(p["completion_tokens"] if p["n"] else None),
            _num(row["token_reduction_pct"], "{:.1f}%"),
            _num(d["mean_latency_s"], "{:.2f}s"),
            _num(p["mean_latency_s"], "{:.2f}s"),
            tier_txt,
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for k, line in enumerate(lines):
        cells = [c.ljust(w) if i in (0, len(header) - 1) else c.rjust(w)
                 for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    errors = sum(1 for r in recs if r.get("error"))
    missing = sum(1 for r in recs if r.get("completion_tokens") is None)
    s3_reuse = reuse_count(recs, "S3")
    out.append("")
    out.append(f"reuse at S3: {s3_reuse} (must be 0){'  <-- WRONG' if s3_reuse else ''}")
    if errors or missing:
        out.append(f"failed calls: {errors}; calls without usage: {missing} (token reduction shown as '-')")
    return "\n".join(out)
