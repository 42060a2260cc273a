"""Memory modes: how a tenant's memory shapes its requests, chosen per tenant, model and request.

- none:                      nothing reused or injected (episodes are still remembered, for export-sft)
- exemplars:                 reuse for the provably same question, up to 3 solved episodes as few-shot turns
- reflect:                   the model writes a lesson about each bad episode; injected for similar questions
- multi_case_reflect:        a lesson distilled from several similar episodes at once, one per cluster
- reflect_update:            one lesson per cluster of similar questions, rewritten after each new episode
- exemplars+reflect_update:  both: reuse and exemplars, plus the cluster's lesson

Lessons are written only for clusters with `min_cluster_size` episodes: question types that recur.

Precedence: the request's `speedup.memory_mode` (when allowed) > `tenants` > `models` > `default`.
A request's mode may cost backend calls (lessons), so it is honoured only for the tenants in
`request_override_tenants`, or for every tenant with `allow_request_override: true`; for the others
it is ignored and the configured mode is used (the `x-speedup-memory-mode` response header says which).
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from budget.patterns import RegexPattern
from memory_store.reflections import ReflectionKind

MemoryMode = Literal["none", "exemplars", "reflect", "multi_case_reflect", "reflect_update", "exemplars+reflect_update"]
MEMORY_MODES: tuple[str, ...] = get_args(MemoryMode)

_KINDS: dict[str, ReflectionKind] = {
    "reflect": "reflect",
    "multi_case_reflect": "multi_case_reflect",
    "reflect_update": "reflect_update",
    "exemplars+reflect_update": "reflect_update",
}


def uses_episodes(mode: str) -> bool:
    """Whether the mode reuses answers and injects exemplars (the episodic tiers)."""
    return mode in ("exemplars", "exemplars+reflect_update")


def reflection_kind(mode: str) -> ReflectionKind | None:
    """Which kind of lesson the mode writes and injects, if any."""
    return _KINDS.get(mode)


class VerifierConfig(BaseModel):
    """An optional check of every new answer; failing answers are never reused or injected.

    regex: the answer must match `pattern` (re.search), checked when the episode is stored.
    judge: the backend model is asked "Is this answer correct? yes/no", in the background.
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["none", "regex", "judge"] = "none"
    pattern: RegexPattern | None = None
    judge_max_tokens: int = Field(3, ge=1, le=16)

    @model_validator(mode="after")
    def _pattern_for_regex(self) -> VerifierConfig:
        if self.kind == "regex" and not self.pattern:
            raise ValueError("verifier kind 'regex' needs a pattern")
        return self


class MemoryModes(BaseModel):
    """The `memory_modes` settings block."""

    model_config = ConfigDict(extra="forbid")
    default: MemoryMode = "exemplars"
    tenants: dict[str, MemoryMode] = Field(default_factory=dict, description="tenant -> mode")
    models: dict[str, MemoryMode] = Field(default_factory=dict, description="request model name -> mode")
    allow_request_override: bool = Field(False, description="every tenant may choose its mode per request")
    request_override_tenants: list[str] = Field(
        default_factory=list, description="tenants that may choose their mode per request"
    )
    reflection_max_tokens: int = Field(80, ge=8, le=512, description="cap on a lesson (max_tokens and truncation)")
    cluster_similarity: float = Field(
        0.75, ge=0.0, le=1.0, description="cosine similarity to a cluster's centroid to belong to it"
    )
    min_cluster_size: int = Field(
        2, ge=1, description="episodes a cluster needs before it gets a lesson (1: reflect on every failure at once)"
    )
    multi_case_size: int = Field(3, ge=2, le=8, description="multi_case_reflect: episodes per distilled lesson")
    verifier: VerifierConfig = Field(default_factory=VerifierConfig)
    response_log_size: int = Field(100_000, ge=100, description="responses kept for feedback")
    max_reflections_per_tenant: int = Field(
        2_000, ge=1, description="clusters and lessons kept per tenant; the ones updated longest ago go first"
    )

    def may_override(self, tenant: str) -> bool:
        return self.allow_request_override or tenant in self.request_override_tenants

    def resolve(self, tenant: str, model: str | None, requested: str | None = None) -> MemoryMode:
        if requested is not None and self.may_override(tenant):
            return requested  # type: ignore[return-value]
        if tenant in self.tenants:
            return self.tenants[tenant]
        if model is not None and model in self.models:
            return self.models[model]
        return self.default
