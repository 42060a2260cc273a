"""The unsure band of the reuse decision, and the question a verifier model is asked about it.

A pair the folds refuse (`budget.reuse.compare` says "different") may still be the same question in
other words. Where the difference is of a kind a language model misjudges (a number, a negation,
whose it is, a comparison, the same words reordered) the pair stays refused; otherwise a verifier
model is asked "Same or Different?" and its probability of "Same" decides (docs/REUSE.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from budget.reuse.compare import compare
from budget.reuse.lexicon import NEGATIONS

# Whose it is: a pronoun or a possessive among the changed words ("If the airline cancels my flight"
# / "If I cancel my flight" read as the same to the verifier at P 0.998 on the calibration half).
PERSONS = frozenset(
    "i me my mine myself you your yours yourself he him his she her hers they them their theirs "
    "we us our ours someone somebody anyone anybody everyone everybody".split()
)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")

SYSTEM = (
    "You check whether two customer questions ask for exactly the same thing, so that one correct "
    "answer fits both. They are Different if anything that changes the answer differs: the action "
    "(join or leave, enable or disable), a negation, whose account or item it is, the product, plan, "
    "place, date, amount or number, or the direction. Other wording for the same request is Same. "
    "Reply with one word: Same or Different."
)
# Written for the prompt, in domains the labelled pairs of bench/data do not use.
EXAMPLES = (
    ("How do I renew my library card?", "What's the process for renewing my library card?", "Same"),
    ("Can I bring my dog into the gym?", "Can I bring my dog into the pool?", "Different"),
    ("Why was I charged a late fee?", "Why did I get billed a late fee?", "Same"),
    ("How do I turn on two-step login?", "How do I turn off two-step login?", "Different"),
    ("Is the museum free for children?", "Do kids get into the museum for free?", "Same"),
    ("How do I change my own email address?", "How do I change my manager's email address?", "Different"),
)


def hard_difference(stored: str, asked: str) -> str | None:
    """What makes a refused pair unfit for a verifier, or None when it may be asked."""
    comparison = compare(stored, asked)
    if comparison.same:
        return None
    changed = comparison.removed + comparison.added
    if comparison.reordered:
        return "order"
    if any(token in NEGATIONS for token in changed):
        return "negation"
    if any(any(c.isdigit() for c in token) for token in changed) or sorted(_NUMBER.findall(stored)) != sorted(
        _NUMBER.findall(asked)
    ):
        return "number"
    if any(token in PERSONS or token == "s" for token in changed):  # the folds split "son's" into "son", "s"
        return "owner"
    if any(token.endswith("er") for token in changed) and "than" in (stored + " " + asked).lower().split():
        return "comparison"  # "12 cm shorter than" / "taller than"
    return None


def equivalence_messages(stored: str, asked: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": SYSTEM}]
    for a, b, verdict in EXAMPLES:
        messages += [
            {"role": "user", "content": f"Question 1: {a}\nQuestion 2: {b}"},
            {"role": "assistant", "content": verdict},
        ]
    messages.append({"role": "user", "content": f"Question 1: {stored}\nQuestion 2: {asked}"})
    return messages


def equivalence_body(stored: str, asked: str, model: str) -> dict[str, Any]:
    """One token, greedy, with the first token's alternatives: P(Same) is read from them."""
    return {
        "model": model,
        "messages": equivalence_messages(stored, asked),
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 10,
    }


def completion_p_same(payload: dict[str, Any]) -> float:
    """P(Same) of a verifier's completion (`equivalence_body`): read from its first token's alternatives."""
    choice = (payload.get("choices") or [{}])[0]
    first = ((choice.get("logprobs") or {}).get("content") or [{}])[0]
    return p_same(first.get("top_logprobs") or [])


def p_same(top_logprobs: Iterable[dict[str, Any]]) -> float:
    """P(Same) among the first token's alternatives that say Same or Different; 0 when none does."""
    same = different = 0.0
    for entry in top_logprobs:
        token = str(entry.get("token", "")).strip().lower()
        probability = math.exp(float(entry.get("logprob", -math.inf)))
        if token.startswith("same"):
            same += probability
        elif token.startswith("diff"):
            different += probability
    return same / (same + different) if same + different > 0 else 0.0
