"""Whether the earlier turns of two conversations bear the same way on the last question.

Small talk ("hi", "thanks!", "great") is dropped. The stored conversation's remaining turns must
each match, in order and by the same deny-by-default comparison as questions, the last turns of
the new one; the new one may have earlier exchanges the stored one did not (an unrelated question
asked first), but a question stored without context never answers a follow-up. An assistant turn
counts like a user turn: "yes please" after "Shall I upgrade you?" is not "yes please" after
"Shall I downgrade you?".
"""

from __future__ import annotations

import re

from budget.reuse.compare import compare
from budget.reuse.text import fold

Turn = str  # "user: ..." or "assistant: ..."


# Courtesy turns: "Perfect, thank you." / "Happy to help! What else can I do for you?" carry no
# fact. Never "yes", "no" or "please": after an offer they are the answer to it.
_SMALL_TALK = frozenset(
    """perfect great awesome cool nice brilliant lovely wonderful fine alright excellent good thank
    happy glad help welcome anything else something what you your i me we can <can> <how> do to today
    with for bye goodbye see soon day have all set sorted""".split()
)


def _small_talk(text: str) -> bool:
    return set(fold(text).tokens) <= _SMALL_TALK


# An assistant turn the user's next turn may accept or turn down: a question, or an offer to act
# ("I can see the transfer" reports; "I can add more", "we'll refund you", "reply to confirm" offer).
_ASKS_OR_OFFERS = re.compile(
    r"\?|\b(?:(?:i|we|you) can(?! see| find| confirm| tell)|(?:i|we|you) could|(?:i|we)'ll|(?:i|we) will|"
    r"(?:i|we)'d|shall (?:i|we)|should (?:i|we)|would you|do you want|want me to|if you|let me know|"
    r"happy to|able to|confirm|option|instead)\b",
    re.IGNORECASE,
)


def _answers_the_assistant(turns: list[Turn], index: int) -> bool:
    """A user turn right after an assistant's question or offer may answer it, and is never small
    talk: "Great, do it." and "I'm good, thanks." after "I can add insurance for $20 if you like." are
    opposite answers, with or without a question mark. After a plain statement ("The next payment is
    on 1 October.") "Perfect, thank you." accepts nothing."""
    if index == 0 or not turns[index].startswith("user: "):
        return False
    role, _, before = turns[index - 1].partition(": ")
    return role == "assistant" and not _small_talk(before) and _ASKS_OR_OFFERS.search(before) is not None


def _content(turns: list[Turn]) -> list[Turn]:
    return [t for i, t in enumerate(turns) if _answers_the_assistant(turns, i) or not _small_talk(t.partition(": ")[2])]


def _asked_in_passing(turns: list[Turn]) -> bool:
    """Earlier exchanges the stored conversation did not have may be ignored only when the user asked
    something ("Are you a real person?"), never when they told something that may bear on the answer
    ("I'm a Gold member, by the way.", "Please answer in French from now on.")."""
    return all(any(fold(t.partition(": ")[2]).asks) for t in turns if t.startswith("user: "))


def _same_turn(stored: Turn, asked: Turn) -> bool:
    role_a, _, text_a = stored.partition(": ")
    role_b, _, text_b = asked.partition(": ")
    return role_a == role_b and compare(text_a, text_b).same


def same_context(stored: list[Turn], asked: list[Turn]) -> bool:
    kept, new = _content(stored), _content(asked)
    if not kept:  # a question asked without context answers no follow-up
        return not new
    if len(new) < len(kept):
        return False
    earlier, tail = new[: len(new) - len(kept)], new[len(new) - len(kept) :]
    return _asked_in_passing(earlier) and all(_same_turn(a, b) for a, b in zip(kept, tail, strict=True))
