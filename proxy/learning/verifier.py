"""The optional answer verifier: a regex a good answer must match, or the backend model as judge."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

from proxy.backend.client import OpenAIBackend
from proxy.gateway.errors import ProxyError
from proxy.learning.memory_modes import VerifierConfig

log = logging.getLogger(__name__)

Verdict = Literal["pass", "fail"]

JUDGE_SYSTEM = "You check answers. Reply with only one word: yes or no."


@dataclass
class Judgement:
    verdict: Verdict | None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Verifier:
    def __init__(self, config: VerifierConfig, backend: OpenAIBackend) -> None:
        self.config = config
        self.backend = backend
        self._pattern = re.compile(config.pattern) if config.pattern else None

    @property
    def enabled(self) -> bool:
        return self.config.kind != "none"

    def check_regex(self, answer: str) -> Verdict | None:
        if self.config.kind != "regex" or self._pattern is None:
            return None
        return "pass" if self._pattern.search(answer) else "fail"

    async def judge(self, question: str, answer: str, model: str | None) -> Judgement:
        """Ask the backend model whether the answer is correct; None when it says neither."""
        if self.config.kind != "judge":
            return Judgement(None)
        prompt = f"Question: {question}\n\nProposed answer: {answer}\n\nIs this answer correct? yes/no"
        body = {
            "model": model or "default",
            "messages": [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}],
            "max_tokens": self.config.judge_max_tokens,
            "temperature": 0,
        }
        try:
            payload, _ = await self.backend.complete(body)
        except ProxyError as error:
            log.warning("judge call failed: %s", error)
            return Judgement(None)
        usage = payload.get("usage") or {}
        choices = payload.get("choices") or [{}]
        reply = ((choices[0].get("message") or {}).get("content") or "").strip().lower()
        found: Verdict | None = "pass" if reply.startswith("yes") else "fail" if reply.startswith("no") else None
        return Judgement(found, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
