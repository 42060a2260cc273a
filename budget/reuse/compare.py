"""What differs between two questions, once casing, punctuation, filler, frames, synonyms, typos
and clause order are folded away. Anything left is a difference: deny by default."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from string import ascii_lowercase
from typing import Literal

from wordnet_lookup import is_wordnet_term

from budget.reuse.lexicon import NEGATIONS, OPPOSITE_PREFIXES, common_words
from budget.reuse.text import CONDITION, Folded, fold, in_canonical_order, normalise_text, readable

Verdict = Literal["identical", "folded", "different"]

MAX_COMPARED_CHARS = 2000  # longer questions are reused only when identical (or, cut, by digest)
_MAX_TYPO_PAIRS = 10_000
_SENTENCE = re.compile(r"[^.?!]+[.?!]*")


@dataclass(frozen=True)
class Comparison:
    """`identical`: the same text but for case and spacing; `folded`: the same once wording that
    cannot change the answer is folded away; `different`: anything else, with what differs."""

    verdict: Verdict
    removed: tuple[str, ...] = field(default=())
    added: tuple[str, ...] = field(default=())
    reordered: bool = False

    @property
    def same(self) -> bool:
        return self.verdict != "different"


def _edits(a: str, b: str) -> int:
    """Edits from `a` to `b`: a letter dropped, added or swapped with its neighbour counts one, a letter
    replaced by another counts two (a slip of the hand drops, doubles or swaps letters; a replaced
    letter is as often another word: "rebook" / "reboot", "iPad" / "iPod"). Cut off above 2."""
    if abs(len(a) - len(b)) > 2:
        return 3
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (0 if ca == cb else 2))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def _is_typo(typed: str, meant: str) -> bool:
    """`typed` misspells `meant`: not an English word itself (so "hostel" never becomes "hotel"), while
    `meant` is one (a product name is nobody's typo: "autopay" never becomes "autoplay"); the same first
    letter; one slip (two in long words), where a replaced letter counts two: "acount" is not
    "amount", "recipt" not "recipe", "stoped" not "stored". Never a number, a tag, a negation or an opposite prefix."""
    a, b = typed, meant
    if not (a.replace("-", "").isalpha() and b.replace("-", "").isalpha()) or a in NEGATIONS or b in NEGATIONS:
        return False
    shorter = min(len(a), len(b))
    if shorter < 4 or a[0] != b[0] or is_wordnet_term(a) or not is_wordnet_term(b):
        return False
    for prefix in OPPOSITE_PREFIXES:
        if (a.startswith(prefix) and a[len(prefix) :] == b) or (b.startswith(prefix) and b[len(prefix) :] == a):
            return False
    return _edits(a, b) <= (1 if shorter < 8 else 2) and not _other_readings(a, b)


@lru_cache(maxsize=4096)
def _other_readings(typed: str, meant: str) -> bool:
    """Another common word is one slip from `typed` too, so which was meant is a guess: "depost" is
    "depot" as much as "deposit", "pinted" "painted" as much as "printed". Only single slips that keep
    the first letter are searched, as `_is_typo` only corrects those; `meant`'s own inflections
    ("happen" for "happens") are no other reading."""
    splits = [(typed[:i], typed[i:]) for i in range(len(typed) + 1)]
    slips = {left + right[1:] for left, right in splits if right}
    slips |= {left + right[1] + right[0] + right[2:] for left, right in splits if len(right) > 1}
    slips |= {left + c + right for left, right in splits for c in ascii_lowercase}
    common = common_words()
    return any(
        w in common and w[0] == typed[0] and not _inflects(w, meant) for w in slips if w != meant and len(w) >= 4
    )


def _inflects(a: str, b: str) -> bool:
    shorter, longer = sorted((a, b), key=len)
    return longer.startswith(shorter) and longer[len(shorter) :] in {"s", "es", "d", "ed"}


def _respell(asked: Folded, stored: Folded) -> Folded:
    """The asked question with each word that is a typo of a stored word spelled as stored."""
    vocabulary = set(stored.tokens)
    unknown = {t for t in asked.tokens if t not in vocabulary}
    if not unknown:
        return asked
    candidates = sorted(vocabulary)
    if len(unknown) * len(candidates) > _MAX_TYPO_PAIRS:
        return asked  # a long text with many new words is not a typo'd repeat
    fixes: dict[str, str] = {}
    for token in unknown:
        matches = [c for c in candidates if _is_typo(token, c)]
        if len(matches) == 1:
            fixes[token] = matches[0]
    if not fixes:
        return asked
    clauses = in_canonical_order(tuple(fixes.get(t, t) for t in clause) for clause in asked.clauses)
    return Folded(clauses, tuple(fixes.get(t, t) for t in asked.sequence), asked.asks, asked.pauses)


def _condition_stated(conditional: Folded, stated_text: str) -> bool:
    """ "Can I get a refund if my flight is cancelled?" = "My flight is cancelled. Can I get a refund?":
    the condition said as a fact before the question. The question sentence must equal the main clauses
    and the other sentences the condition, so "A if B" never equals "B. A?" read the other way."""
    sentences = [s.strip() for s in _SENTENCE.findall(stated_text) if s.strip()]
    questions = [s for s in sentences if s.endswith("?")]
    facts = [s for s in sentences if not s.endswith("?")]
    if len(questions) != 1 or not facts:
        return False
    asked, said = fold(questions[0]), fold(" ".join(facts))
    if any(said.asks):  # "Is my flight cancelled. Can I get a refund?" states nothing
        return False
    main = tuple(c for c in conditional.clauses if c[0] != CONDITION)
    conditions = tuple(sorted(c[1:] for c in conditional.clauses if c[0] == CONDITION))
    if not main or not conditions or any(c[0] == CONDITION for c in asked.clauses + said.clauses):
        return False
    return main == asked.clauses and conditions == said.clauses


@lru_cache(maxsize=4096)
def compare(stored: str, asked: str) -> Comparison:
    if normalise_text(stored) == normalise_text(asked):
        return Comparison("identical")
    if max(len(stored), len(asked)) > MAX_COMPARED_CHARS:
        return Comparison("different")  # too long to fold word by word on the request path
    if not (readable(stored) and readable(asked)):
        return Comparison("different")  # letters or signs the folding cannot read: identical text only
    a = fold(stored)
    b = _respell(fold(asked), a)
    if _condition_stated(a, asked) or _condition_stated(b, stored):
        return Comparison("folded")
    if a.asks != b.asks:  # "Do I need a new router?" is not "I need a new router."
        return Comparison("different")
    commas_dropped = a.sequence == b.sequence and (a.pauses <= b.pauses or b.pauses <= a.pauses)
    if a.clauses == b.clauses or commas_dropped:  # a condition moved, or commas dropped
        return Comparison("folded")
    bag_a, bag_b = Counter(a.tokens), Counter(b.tokens)
    removed = tuple(sorted((bag_a - bag_b).elements()))
    added = tuple(sorted((bag_b - bag_a).elements()))
    # The same words in another order are never folded: that is the shape of "from A to B" / "from
    # B to A", "8 got off and 5 got on" / "8 got on and 5 got off", "X has 3 times as many as Y".
    return Comparison("different", removed=removed, added=added, reordered=not removed and not added)


def same_question(stored: str, asked: str) -> bool:
    """True when `asked` may be answered with `stored`'s answer, as far as the text can prove it."""
    return compare(stored, asked).same
