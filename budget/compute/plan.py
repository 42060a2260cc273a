"""How much test-time compute a request gets: samples to vote over, refine rounds, a token ladder.

Memory is the prior (Pan & Zhao, arXiv 2505.20643): the more familiar the question (the policy's
`Decision.familiarity`), the lower the confidence a vote needs and the fewer rounds a refine may
run; a reused question draws nothing at all. Never more than the client asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ComputeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The Beta rule's threshold (budget/compute/stopping.py), calibrated on the replay's calibration
    # streams (docs/ADAPTIVE_COMPUTE.md): 0.80 ends a cold vote at 2 agreeing samples, 3 against 1 or
    # 5 against 2 (0.90 first drew 3 and saved half as much at the same accuracy); 0.77 a familiar
    # one at 4 against 2 as well. At 0.75 or below a single sample would end every vote.
    cold_confidence: float = Field(0.80, gt=0.5, lt=1.0)
    familiar_confidence: float = Field(0.77, gt=0.5, lt=1.0)
    # Ends a vote after its first sample when that sample's mean token log-probability reaches this
    # (budget/compute/confidence.py). None: off. Model-specific: for the bundled Qwen2.5-Coder-0.5B at
    # temperature 0.3, -0.075 is a calibration stream's top decile and -0.085 the point where, with the
    # futility stop, two calibration streams together save half the tokens within 2 points of accuracy.
    confident_sample_logprob: float | None = Field(None, le=0.0)
    # Ends a vote once this many samples have answered and no two answers agree (stopping.no_consensus):
    # on the calibration streams 5 cost at most half a point of accuracy, 3 or 4 cost 1-8 points
    # (docs/ADAPTIVE_COMPUTE.md). None: off.
    futility_after: int | None = Field(5, ge=2)
    # Ends a cold vote earlier, from its second answer, when no two answers agree and every sample's mean
    # token log-probability is below this (stopping.unsure_split). None: off. Model-specific, like the
    # gate: -0.15 for the bundled model at temperature 0.3 (docs/ADAPTIVE_COMPUTE.md).
    unsure_split_logprob: float | None = Field(None, le=0.0)
    max_samples: int = Field(16, ge=1, le=64, description="the most samples any request may ask for")
    max_refine_rounds: int = Field(5, ge=1, le=16, description="the most refine rounds any request may ask for")
    # How refine checks a draft when no verifier is configured: a second solve that must reach the same
    # answer, by the serving model ("consistency") or by the verifier model ("verifier_model":
    # `reuse_verifier.url`, else the bundled Qwen2.5-Coder-1.5B, embedded; at temperature 0), or the
    # model's yes/no on its own answer ("judge": no signal from the bundled 0.5B model).
    refine_check: Literal["consistency", "verifier_model", "judge"] = "consistency"
    # Free-text answers (no final value to compare) agree from this cosine of their embeddings.
    answer_similarity: float = Field(0.85, ge=0.0, le=1.0)
    allow_per_request: bool | None = Field(
        None, description="every tenant may ask for samples/refine; None: on when no api_keys are configured"
    )
    tenants: list[str] = Field(default_factory=list, description="tenants that may ask for samples/refine")

    @model_validator(mode="after")
    def _ordered(self) -> ComputeConfig:
        if self.familiar_confidence > self.cold_confidence:
            raise ValueError("familiar_confidence must not exceed cold_confidence")
        return self

    def allows(self, tenant: str, open_by_default: bool) -> bool:
        """Extra samples and rounds cost money: off for tenants unless the operator enabled them."""
        allowed = open_by_default if self.allow_per_request is None else self.allow_per_request
        return allowed or tenant in self.tenants


@dataclass(frozen=True)
class SamplePlan:
    max_samples: int
    confidence: float
    confident_sample_logprob: float | None = None  # the first sample alone ends the vote from here up
    futility_after: int | None = None  # this many samples, no two agreeing, end the vote
    unsure_split_logprob: float | None = None  # no two agreeing and none this sure end the vote

    def wants_logprobs(self, first: bool) -> bool:
        """Every sample's log-probabilities are read by the unsure-split stop, the first one's by the gate."""
        return self.unsure_split_logprob is not None or (first and self.confident_sample_logprob is not None)


@dataclass(frozen=True)
class RefinePlan:
    max_rounds: int


def plan_samples(config: ComputeConfig, requested: int, familiarity: float, guided: bool = False) -> SamplePlan:
    """`guided`: exemplars are in the prompt. The confident-sample gate and the futility stops are then
    off: exemplars make the model sure of itself without making it right (held-out replay,
    docs/ADAPTIVE_COMPUTE.md), and all were calibrated on questions asked without them."""
    f = min(1.0, max(0.0, familiarity))
    confidence = config.cold_confidence - f * (config.cold_confidence - config.familiar_confidence)
    return SamplePlan(
        max_samples=min(requested, config.max_samples),
        confidence=confidence,
        confident_sample_logprob=None if guided else config.confident_sample_logprob,
        futility_after=None if guided else config.futility_after,
        unsure_split_logprob=None if guided else config.unsure_split_logprob,
    )


def plan_rounds(config: ComputeConfig, requested: int, familiarity: float) -> RefinePlan:
    """Up to half the rounds fewer on a fully familiar question: its first draft is more often right."""
    f = min(1.0, max(0.0, familiarity))
    allowed = min(requested, config.max_refine_rounds)
    return RefinePlan(max_rounds=max(1, math.ceil(allowed * (1.0 - 0.5 * f))))


def token_ladder(first: int | None, ceiling: int | None, factors: list[float]) -> list[int | None]:
    """The max_tokens of each attempt: the budget, its multiples, then the ceiling (None: the backend's own).

    A reasoning answer cut off at its budget is retried higher; every attempt is counted.
    """
    if first is None:
        return [ceiling]
    rungs: list[int | None] = [first]
    for factor in factors:
        rung = math.ceil(first * factor)
        if ceiling is not None and rung >= ceiling:
            break
        rungs.append(rung)
    if ceiling is None or ceiling > first:
        rungs.append(ceiling)
    return rungs
