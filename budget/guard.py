"""The reuse guard: decides whether two questions are provably the same question.

Embedding similarity alone cannot tell "how many apples does Ann have left if she
eats 3" from the same question with 4, nor a question from its reversal. A stored
answer is reused only when, besides high similarity, both questions carry the same
signature: the same numbers and named entities in the same order, the same units
after each number, and the same polarity words (negations, comparisons, directions).
"""

from __future__ import annotations

import re
import unicodedata

from pydantic import BaseModel

_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17",
    "eighteen": "18", "nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40",
    "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
    "hundred": "100", "thousand": "1000", "million": "1000000", "half": "0.5", "twice": "x2",
    "double": "x2", "triple": "x3", "thrice": "x3", "quarter": "0.25", "dozen": "12",
}  # fmt: skip

# Words whose change reverses or redirects a question while leaving it looking alike.
_POLARITY_WORDS = frozenset(
    """not no never none nothing nobody without except cannot can't isn't aren't wasn't weren't don't
    doesn't didn't won't wouldn't shouldn't couldn't more less fewer greater smaller larger bigger
    higher lower longer shorter older younger before after earlier later increase decrease add
    subtract plus minus gain lose buy sell earn spend give receive borrow lend minimum maximum min
    max most least above below over under true false always only cheapest dearest fastest slowest
    remain""".split()
)

# Inflections and synonyms folded onto one polarity word, so rewording keeps the signature.
_CANONICAL = {
    "increased": "increase", "increases": "increase", "decreased": "decrease", "decreases": "decrease",
    "added": "add", "adds": "add", "subtracted": "subtract", "gained": "gain", "gains": "gain",
    "lost": "lose", "loses": "lose", "buys": "buy", "bought": "buy", "purchase": "buy",
    "purchases": "buy", "purchased": "buy", "sells": "sell", "sold": "sell", "earns": "earn",
    "earned": "earn", "spends": "spend", "spent": "spend", "gives": "give", "gave": "give",
    "receives": "receive", "received": "receive", "borrowed": "borrow", "lent": "lend",
    "remaining": "remain", "remains": "remain", "left": "remain",
}  # fmt: skip

# Capitalised words that are ordinary English, not names, when they open a sentence.
_COMMON_CAPITALISED = frozenset(
    """try good luck great thanks cheers consider imagine here's let's a an the this that these those
    here there what which who whom whose when where why how if then so and but or please quick
    question problem solve answer calculate compute find work determine tell given suppose assume
    let consider can could would should will is are was were do does did has have had it its he she
    they we you i my your his her their our each every after before during in on at for from with by
    of to as all some any many much word math now note also next finally first second third i'm i've
    okay ok hi hello hey thanks thank""".split()
)

_DETERMINERS = frozenset("this that the which each every any no another".split())

_TOKEN = re.compile(r"\$?\d[\d,]*(?:\.\d+)?%?|[A-Za-z][A-Za-z'’-]*")


class QuestionSignature(BaseModel):
    """What must be equal, in order, for two questions to be the same question."""

    entities: tuple[str, ...]
    polarity: tuple[str, ...]

    def matches(self, other: QuestionSignature) -> bool:
        return self.entities == other.entities and self.polarity == other.polarity


def normalise_text(text: str) -> str:
    """Case, width and whitespace folded; used for exact (S1) identity."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = re.sub(r"\s+", " ", folded).strip()
    return folded.rstrip(" .?!")


def _number(token: str) -> str:
    cleaned = token.lstrip("$").rstrip("%").replace(",", "")
    if "." in cleaned:
        cleaned = cleaned.rstrip("0").rstrip(".") or "0"
    return cleaned + ("%" if token.endswith("%") else "")


def _unit(word: str) -> str:
    word = word.lower()
    return word[:-1] if word.endswith("s") and len(word) > 3 else word


def _after_determiner(tokens: list[str], position: int) -> bool:
    """'this one', 'each one': a pronoun, not the number 1."""
    return position > 0 and tokens[position - 1].lower() in _DETERMINERS


def signature(text: str) -> QuestionSignature:
    tokens = _TOKEN.findall(unicodedata.normalize("NFKC", text))
    entities: list[str] = []
    polarity: list[str] = []
    for position, token in enumerate(tokens):
        lower = token.lower().replace("’", "'")
        lower = _CANONICAL.get(lower, lower)
        number = None
        if token[0].isdigit() or token[0] == "$":
            number = _number(token)
        elif lower in _NUMBER_WORDS and not (lower == "one" and _after_determiner(tokens, position)):
            number = _NUMBER_WORDS[lower]
        elif token[0].isupper() and lower not in _COMMON_CAPITALISED and lower not in _POLARITY_WORDS:
            entities.append("n:" + lower)
        if number is not None:
            entities.append("#" + number)
            following = tokens[position + 1] if position + 1 < len(tokens) else ""
            if following[:1].isalpha() and following.lower() not in _COMMON_CAPITALISED | _NUMBER_WORDS.keys():
                entities.append("u:" + _unit(following))
        if lower in _POLARITY_WORDS:
            polarity.append(lower)
    return QuestionSignature(entities=tuple(entities), polarity=tuple(sorted(polarity)))


def same_question(a: str, b: str) -> bool:
    """True when b may be answered with a's answer, as far as the text can prove it."""
    return normalise_text(a) == normalise_text(b) or signature(a).matches(signature(b))
