"""How sure the model was of one sample: the mean log-probability of its tokens (DeepConf, arXiv 2508.15260).

Measured on the replay's calibration stream (docs/ADAPTIVE_COMPUTE.md), the mean beat the last 32
tokens and the weakest 16-token window as a predictor of a right final answer, and is the cheapest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def mean_logprob(logprobs: Mapping[str, Any] | None) -> float | None:
    """The mean over a choice's `logprobs.content` (OpenAI format); None when the backend sent none."""
    tokens = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if not isinstance(tokens, list):
        return None  # none sent, or not in the OpenAI shape: no evidence either way
    values = [t["logprob"] for t in tokens if isinstance(t, Mapping) and isinstance(t.get("logprob"), int | float)]
    return sum(values) / len(values) if values else None


def is_confident(logprobs: Mapping[str, Any] | None, threshold: float | None) -> bool:
    if threshold is None:
        return False
    mean = mean_logprob(logprobs)
    return mean is not None and mean >= threshold
