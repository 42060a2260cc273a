"""Folding a question into what its answer depends on: clauses of content tokens, order kept within a clause."""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from wordnet_lookup import is_wordnet_term

from budget.reuse.lexicon import (
    ASKING_VERBS,
    CONTRACTIONS,
    DETERMINERS,
    FILLER,
    FILLER_PHRASES,
    FRAMES,
    FUNCTION_WORDS,
    MODALS,
    NUMBER_WORDS,
    QUESTION_STARTS,
    SYNONYM_PHRASES,
    SYNONYMS,
)

_TOKEN = re.compile(
    r"\d{1,2}:\d{2}"  # 10:30
    r"|(?:(?<![\w.])-)?[$£€¥]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?%?"  # 12, 1,200, $12.50, 15%, -20; 1,5 is two
    r"|<[a-z]+>"  # frame tags
    r"|[a-z][a-z'\-]*"  # words, colleague's, e-mail
    r"|[.,;:!?]"  # clause boundaries
    r"|[£€¥+*/=<>×÷^#@&]"  # signs: 48 ÷ 6 is not 48 × 6
)
_CURRENCIES = {"$": "usd", "£": "gbp", "€": "eur", "¥": "jpy"}
_BOUNDARY = frozenset(".,;:!?")
# A clause starts at these: "Can I get a refund if my flight is cancelled?" has two clauses,
# in either order; "from London to Paris" keeps its order inside one.
_SUBORDINATORS = frozenset("unless because since while although though before after until".split())
# "if", "when", "whenever" and "once" open a condition: the clause they open keeps a marker, so that
# "A if B" equals "If B, A" but never "B if A" (and "When will I be charged?" is not "Will I be charged?").
_CONDITIONS = frozenset("if when whenever once".split())
CONDITION = "<if>"
# Clause boundaries that carry nothing once the clauses are apart.
_JOINERS = frozenset("and but so then".split())
_AUXILIARIES = frozenset("is are am was were do does did will can could should would may must".split())
# "When is my bill due?" asks for a day: not a condition, and not "what time" either (an hour).
_WHEN_ASKED = "<whenq>"
# "Can you check if I was charged twice?": a question inside a question, no condition.
_WHETHER = "<whether>"
# "Is it possible for my GP to refer me" = "Can my GP refer me" (not "for me": that is a frame).
_POSSIBLE_FOR = re.compile(r"\bis it possible for (?!me\b)((?:[a-z'\-]+ ){1,4}?)to\b")
# "I want to enable 2FA, how do I do it?" = "How do I enable 2FA?"
_WANT_THEN_HOW = re.compile(
    r"^i (?:want|would like|need) to (.+?),? how (?:do|can|should) i (?:do|manage) (?:it|that|this)\b"
)
# "Do you charge for card payments?" = "Is there a fee for card payments?"; only opening the question
# ("What do you charge for?" asks which things cost).
_DO_YOU_CHARGE = re.compile(r"^do you charge (for|to)\b")
_UNITS = {"dollar": "usd", "dollars": "usd", "bucks": "usd", "percent": "%", "per cent": "%", "pct": "%"}


@dataclass(frozen=True)
class Folded:
    """A question as its answer sees it. `clauses`: the main clauses in the order written (events keep
    their order: "I cancelled. Then you charged me." is not the reverse), then the conditions and
    subordinate clauses as a sorted multiset (they may stand before or after what they qualify)."""

    clauses: tuple[tuple[str, ...], ...]
    # The content tokens in the order written, commas dropped, sentence ends kept (but a final one).
    sequence: tuple[str, ...] = ()
    # Per sentence, a question or a statement: "Do I need a new router?" is not "I need a new router."
    asks: tuple[bool, ...] = ()
    # Where commas stood, as positions in `sequence`: a comma may be dropped, never moved.
    pauses: frozenset[int] = frozenset()

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(token for clause in self.clauses if clause != SENTENCE_BREAK for token in clause)


def is_qualifier(clause: tuple[str, ...]) -> bool:
    return bool(clause) and (clause[0] == CONDITION or clause[0] in _SUBORDINATORS)


SENTENCE_BREAK: tuple[str, ...] = ("<s>",)


def _sentence_in_order(clauses: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """One sentence: with one main clause its conditions may stand anywhere ("Can I get a refund if my
    flight is cancelled?"); with more, every clause keeps its place (what "before noon" qualifies)."""
    main = [c for c in clauses if not is_qualifier(c)]
    if len(main) > 1:
        return clauses
    return main + sorted(c for c in clauses if is_qualifier(c))


def in_canonical_order(clauses: Iterable[tuple[str, ...]]) -> tuple[tuple[str, ...], ...]:
    """Sentences in the order written, each in its canonical order, a break between them."""
    sentences: list[list[tuple[str, ...]]] = [[]]
    for clause in clauses:
        if clause == SENTENCE_BREAK:
            sentences.append([])
        else:
            sentences[-1].append(clause)
    out: list[tuple[str, ...]] = []
    for sentence in (s for s in sentences if s):
        out += ([SENTENCE_BREAK] if out else []) + _sentence_in_order(sentence)
    return tuple(out)


def _phrase_table() -> dict[tuple[str, ...], str]:
    table: dict[tuple[str, ...], str] = {tuple(p.split()): "" for p in FILLER_PHRASES}
    for tag, phrases in FRAMES.items():
        table |= {tuple(p.split()): tag for p in phrases}
    table |= {tuple(p.split()): word for p, word in SYNONYM_PHRASES.items()}
    table |= {tuple(p.split()): word for p, word in _UNITS.items()}
    return {phrase: word for phrase, word in table.items() if len(phrase) > 1}  # single words: _canonical


_PHRASES = _phrase_table()
_LONGEST = max(len(p) for p in _PHRASES)


def _raw_tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).casefold().replace("’", "'").replace("‘", "'")
    text = re.sub(r"[a-z]+'[a-z]+", lambda m: CONTRACTIONS.get(m.group(0), m.group(0)), text)
    text = re.sub(r"(\w)'s\b", r"\1 's", text)  # my colleague's password: the owner is a token of its own
    text = re.sub(r"\.{2,}|…", ",", text)  # an ellipsis is a pause, not the end of a sentence
    text = _WANT_THEN_HOW.sub(r"how do i \1", _POSSIBLE_FOR.sub(r"can \1", text))
    text = _DO_YOU_CHARGE.sub(r"is there a fee \1", text)
    return _TOKEN.findall(text)


def _question_words(tokens: list[str]) -> list[str]:
    """ "when" opening a question (before an auxiliary, or after an asking verb: "do you know when")
    asks for a day; "if"/"whether" after an asking verb ("check if") asks a question: neither opens
    a condition."""
    out: list[str] = []
    for i, token in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        before = [t for t in tokens[max(0, i - 2) : i] if t not in ("me", "us")]
        opens = i == 0 or tokens[i - 1] in _BOUNDARY
        if token == "when" and ((opens and following in _AUXILIARIES) or (before and before[-1] in ASKING_VERBS)):
            out.append(_WHEN_ASKED)
        elif token == "whether" or (token == "if" and before and before[-1] in ASKING_VERBS):
            out.append(_WHETHER)
        else:
            out.append(token)
    return out


_SUBJECTS = frozenset("i you it we they he she my your our their the this there".split())
_SENTENCE_ENDS = frozenset(".?!")


def _sentence_asks(tokens: list[str]) -> bool:
    """A question mark, or a question word first once filler and frames are folded, or after a
    leading condition an inverted auxiliary ("If my passport expires, can I still travel")."""
    if tokens and tokens[-1] == "?":
        return True
    words = [t for t in tokens if t not in _BOUNDARY and t not in FILLER]
    first = words[0] if words else ""
    if first in QUESTION_STARTS or first.startswith("<"):
        return True
    frame = any(t.startswith("<") for t in words[1:])  # "can i", "how do i": a question frame
    inverted = frame or any(t in _AUXILIARIES and n in _SUBJECTS for t, n in itertools.pairwise(words))
    return first in _CONDITIONS and inverted


def _asks(tokens: list[str]) -> tuple[bool, ...]:
    sentences: list[list[str]] = [[]]
    for token in tokens:
        sentences[-1].append(token)
        if token in _SENTENCE_ENDS:
            sentences.append([])
    kept = [s for s in sentences if any(t not in _BOUNDARY and t not in FILLER for t in s)]
    return tuple(_sentence_asks(s) for s in kept)


def _replace_phrases(tokens: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for size in range(min(_LONGEST, len(tokens) - i), 1, -1):
            found = _PHRASES.get(tuple(tokens[i : i + size]))
            if found is not None:
                out += found.split()  # "if i do not have" -> "if without": a condition of its own
                i += size
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def _number(token: str) -> list[str]:
    negative = token.startswith("-")
    unsigned = token.lstrip("-")
    currency = _CURRENCIES.get(unsigned[0])
    cleaned = unsigned.lstrip("$£€¥").rstrip("%").replace(",", "")
    if currency and "." in cleaned:  # $12.50 = $12.5; but version 10.10 is not 10.1
        cleaned = cleaned.rstrip("0").rstrip(".") or "0"
    value = ("-" if negative else "") + cleaned
    return [value] + ([currency] if currency else []) + (["%"] if token.endswith("%") else [])


_BE = frozenset("is are was were be been will".split())
_IRREGULAR_PAST = frozenset("paid sent given told shown made done taken sold bought kept owed".split())
_GREETINGS = frozenset("hi hello hey".split())


def _carries_nothing(tokens: list[str], position: int) -> bool:
    """ "there" in "is there a fee" or "hi there" (not "can I pay there"); "do" as an auxiliary (not
    "what does this button do")."""
    token = tokens[position]
    before = tokens[position - 1] if position > 0 else ""
    after = tokens[position + 1] if position + 1 < len(tokens) else ""
    two_before = tokens[position - 2] if position > 1 else ""
    if token == "there":  # "is there a fee", "there is", "will there be"; not "will the engineer be there"
        opens = position < 2 or two_before in _BOUNDARY or two_before in QUESTION_STARTS
        return after in _BE or before in _GREETINGS or (before in ("is", "are", "was", "were") and opens)
    if token in ("do", "does"):
        return after not in _BOUNDARY and after != ""
    if token in ("a", "an", "the") and before in ("is", "are") and two_before == "what":
        return False  # "What is a routing number?" asks what one is, "What is the routing number?" mine
    participle = after.endswith("ed") or after in _IRREGULAR_PAST
    if token in ("is", "are", "am") and before in ("who", "what") and participle:
        return False  # "Who is paid first?" is not "Who paid first?"
    return token in FILLER or token in FUNCTION_WORDS


def _canonical(tokens: list[str]) -> list[str]:
    out: list[str] = []
    for position, token in enumerate(tokens):
        if token[0].isdigit() or (token[0] in "-$£€¥" and len(token) > 1):
            out += _number(token)
        elif token in NUMBER_WORDS and not (token == "one" and position > 0 and tokens[position - 1] in DETERMINERS):
            out.append(NUMBER_WORDS[token])
        elif token in _UNITS:
            out.append(_UNITS[token])
        elif _carries_nothing(tokens, position):
            continue
        else:
            out.append(SYNONYMS.get(token, token))
    return out


def _base(participle: str) -> str | None:
    """covered -> cover, included -> include; None when it is no -ed participle of a word."""
    if not participle.endswith("ed") or len(participle) < 5:
        return None
    for stem in (participle[:-1], participle[:-2]):
        if is_wordnet_term(stem):
            return stem
    return None


def _active(clause: list[str]) -> list[str]:
    """The active form of a passive clause: "damage covered by warranty" -> "warranty cover damage",
    "breakfast included in booking" -> "booking include breakfast". Roles are kept, only their order
    is made canonical."""
    if "needed" in clause[1:] and not {"i", "you", "we"} & set(clause):
        # "Is a visa needed to travel" = "Do I need a visa to travel": the one who needs is the asker.
        at = clause.index("needed")
        return ["i", "need"] + clause[:at] + clause[at + 1 :]
    for i, token in enumerate(clause[:-2]):
        joiner = clause[i + 1]
        if (joiner == "by" or (token == "included" and joiner == "in")) and i > 0:
            base = _base(token)
            if base is not None:
                return clause[i + 2 :] + [base] + clause[:i]
    return clause


def _canonical_clause(clause: list[str]) -> tuple[str, ...]:
    heads = _SUBORDINATORS | _JOINERS | {CONDITION}
    head = clause[:1] if clause and clause[0] in heads else []
    body = _active(clause[len(head) :])
    modals = [t for t in body if t in MODALS]
    return tuple(head + modals + [t for t in body if t not in MODALS])


def _clauses(tokens: list[str]) -> tuple[tuple[str, ...], ...]:
    clauses: list[tuple[str, ...]] = []
    current: list[str] = []
    for token in tokens:
        if token in _JOINERS and current and current[0] == CONDITION:
            current.append(token)  # "if I cancel and rebook": one condition, not a condition and a wish
        elif token in _BOUNDARY or token in _SUBORDINATORS or token in _JOINERS or token in _CONDITIONS:
            if current:
                clauses.append(_canonical_clause(current))
            if token in _SENTENCE_ENDS:
                clauses.append(SENTENCE_BREAK)
            # A joiner heads its clause: "covered but the screen" is not "covered and the screen".
            current = [CONDITION] if token in _CONDITIONS else [token] if token not in _BOUNDARY else []
        else:
            current.append(token)
    if current:
        clauses.append(_canonical_clause(current))
    # A clause left with only its head ("..., and thanks!") carries nothing.
    return in_canonical_order(c for c in clauses if not (len(c) == 1 and (is_qualifier(c) or c[0] in _JOINERS)))


@lru_cache(maxsize=4096)  # a folded 2,000-character text is ~20 KB
def fold(text: str) -> Folded:
    phrased = _replace_phrases(_question_words(_raw_tokens(text)))
    tokens = _canonical(phrased)
    clauses = _clauses(tokens)
    sequence: list[str] = []
    pauses: set[int] = set()
    for token in tokens:
        if token in _SENTENCE_ENDS:
            if sequence and sequence[-1] != ".":
                sequence.append(".")
        elif token in _BOUNDARY:
            pauses.add(len(sequence))
        else:
            sequence.append(token)
    if sequence and sequence[-1] == ".":
        sequence.pop()
    return Folded(clauses, tuple(sequence), _asks(phrased), frozenset(p for p in pauses if p < len(sequence)))


def normalise_text(text: str) -> str:
    """Case, width and whitespace folded: exact (S1) identity. A final "." or "!" may go, a final "?"
    stays: "My flight is cancelled." is not "My flight is cancelled?"."""
    folded = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()
    asks = folded.rstrip(" .!").endswith("?")
    return folded.rstrip(" .?!") + ("?" if asks else "")


# What the folding reads: Latin letters, digits, punctuation, currency and arithmetic signs. Text with
# anything else ("Как отменить заказ?", "-20°C") is reused only when identical.
_READABLE = re.compile(r"[a-z0-9\s.,;:!?'\"()\-$%&£€¥+*/=<>×÷^#@_]*")


def readable(text: str) -> bool:
    return _READABLE.fullmatch(unicodedata.normalize("NFKC", text).casefold().replace("’", "'")) is not None
