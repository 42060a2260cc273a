"""The cost model: what the backend charges per 1k prompt and completion tokens, per model."""

from __future__ import annotations

from pydantic import BaseModel, Field

WILDCARD = "*"


class ModelPrice(BaseModel):
    prompt_per_1k: float = Field(0.0, ge=0)
    completion_per_1k: float = Field(0.0, ge=0)

    model_config = {"extra": "forbid"}

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.prompt_per_1k + completion_tokens * self.completion_per_1k) / 1000.0


class Pricing(BaseModel):
    """Prices by the model name clients send; "*" prices every model not listed. Empty: no money figures."""

    currency: str = "USD"
    prices: dict[str, ModelPrice] = Field(default_factory=dict)

    model_config = {"extra": "forbid"}

    @property
    def configured(self) -> bool:
        return bool(self.prices)

    def price_for(self, model: str) -> ModelPrice | None:
        return self.prices.get(model) or self.prices.get(WILDCARD)
