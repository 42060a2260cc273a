"""Labelled question pairs for the reuse decision (issue 12).

The proxy may answer a new question from memory only when it is provably the same question as a
stored one; serving a wrong answer from memory is the worst failure it can have.  This module builds
the project's own labelled data for calibrating that decision on one half (``calibration``) and
reporting on the other, held-out half (``heldout``):

* ``bench/data/reuse_pairs.jsonl`` -- single questions: ``a`` is the stored question, ``b`` the new one;
* ``bench/data/reuse_conversations.jsonl`` -- the same for chat histories (lists of OpenAI messages
  that end with a user turn).

``label`` is ``hit`` when the answer stored for ``a`` is right for ``b`` and ``trap`` when ``b`` looks
alike but needs another answer.  Everything derives from hand-written seeds in
``bench/data/reuse_seeds/*.json`` (written for this project, not taken from any public benchmark);
code only adds the mechanical variants -- case, punctuation, typos, filler words, other numbers in a
word problem, extra chat turns -- with seeded ``random.Random`` instances, so
``python -m bench.reuse_data`` rewrites both files byte-identically.  ``--stats`` prints the counts,
``--check`` fails when the checked-in files are stale.

Seed syntax of a support question (``q``): ``[old>new:X]`` is a trap-making change (the base keeps
``old``; one trap per marker gets ``new``), ``X`` one of ``TRAP_CODES``; two ``<...>`` spans are
swapped to make a direction trap.  ``c``/``w``/``f`` hold hand-written hits (clauses reordered, other
words, other question form) and ``t`` full-sentence traps ``[code, text, note]``.  Math seeds are
templates with ``{slots}``, an ``expr`` computing the answer, ``fill`` values, rewordings ``re`` and
reversed variants ``dir``.  Conversation seeds are described in ``bench/data/README.md``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import operator
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from random import Random
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"
SEED_DIR = DATA_DIR / "reuse_seeds"
PAIRS_PATH = DATA_DIR / "reuse_pairs.jsonl"
CONVERSATIONS_PATH = DATA_DIR / "reuse_conversations.jsonl"
RANDOM_SEED = "speedup-reuse-data-v1"

Row = dict[str, Any]
Message = dict[str, str]

SPLITS = ("calibration", "heldout")
SUPPORT_DOMAINS = ("billing", "retail", "home_services", "health", "travel", "it_accounts", "banking", "hr")
FRESH_SPLIT = "fresh"


@dataclass(frozen=True)
class SeedSet:
    """Where seeds are read from and pairs written to. The fresh set was written after the decision's
    rules, by someone who had not read them, in other domains: all of it is held out ("fresh")."""

    seed_dir: Path
    support_domains: tuple[str, ...]
    pairs_path: Path
    conversations_path: Path
    family_prefix: str = ""
    split: str | None = None  # None: calibration and held-out halves; else every row in this split


MAIN = SeedSet(SEED_DIR, SUPPORT_DOMAINS, PAIRS_PATH, CONVERSATIONS_PATH)
FRESH = SeedSet(
    DATA_DIR / "reuse_seeds_fresh",
    ("telecom", "insurance", "utilities", "education", "food_delivery", "software_saas"),
    DATA_DIR / "reuse_pairs_fresh.jsonl",
    DATA_DIR / "reuse_conversations_fresh.jsonl",
    family_prefix="fresh-",
    split=FRESH_SPLIT,
)
MATH_DOMAIN = "math"
FIELDS = ("id", "family", "domain", "label", "category", "split", "a", "b", "note")

NEAR_CATEGORIES = ("near_case", "near_punctuation", "near_typo", "near_filler")
HIT_CATEGORIES = (*NEAR_CATEGORIES, "near_clause_order", "paraphrase_words", "paraphrase_form", "math_reworded")
TRAP_CODES = {
    "N": "trap_negation",
    "A": "trap_antonym",
    "E": "trap_entity",
    "U": "trap_number",
    "S": "trap_scope",
    "D": "trap_direction",
}
TRAP_CATEGORIES = (*TRAP_CODES.values(), "math_numbers", "math_direction")
CONV_HIT_CATEGORIES = (
    "conv_same_context_reworded",
    "conv_unrelated_earlier",
    "conv_small_talk",
    "conv_identical_last_reworded",
)
CONV_TRAP_CATEGORIES = ("conv_different_context", "conv_changed_detail", "conv_different_offer")
LABELS: dict[str, str] = {c: "hit" for c in (*HIT_CATEGORIES, *CONV_HIT_CATEGORIES)} | {
    c: "trap" for c in (*TRAP_CATEGORIES, *CONV_TRAP_CATEGORIES)
}

# How many mechanical near-duplicates each support question gets, cycling: keeps hits near half.
NEAR_PER_FAMILY = (1,)
TRAP_NOISE_RATE = 0.2
"""Share of support traps whose new question also gets a case or punctuation change."""
REWORDED_TRAP_RATE = 0.55
"""Share of support families that also get a trap made from one of their hand-written rewordings."""

_WORD = re.compile(r"[A-Za-z]+")
_MARKER = re.compile(r"\[([^\[\]>]*)>([^\[\]]*?):([A-Z])\]")
_SWAP = re.compile(r"<([^<>]+)>")
_OPENERS = frozenset(
    """how what what's when where where's why which who can could is are am do does did will would should
    shall has have my if our once there the a an in on before after during""".split()
)
_APOSTROPHE_S_WORDS = frozenset("it what that there where here who how let".split())
_PREFIXES = (
    "Hi, ",
    "Hello, ",
    "Hey, ",
    "Hi there, ",
    "Quick question: ",
    "Um, ",
    "Hi! ",
    "Sorry to bother you, but ",
    "Good morning, ",
    "Hello, quick question: ",
)
_SUFFIXES = (" Thanks in advance.", " Thanks!", " Thank you.", " Thanks in advance!", " Cheers.")


# --------------------------------------------------------------------------------------------- rows


def make_row(family: str, domain: str, category: str, a: Any, b: Any, note: str) -> Row:
    """One labelled pair; ``split`` is filled in later, per family, and ``number_rows`` makes ids unique."""
    if a == b:
        raise ValueError(f"{family}/{category}: a and b are identical: {a!r}")
    return {
        "id": f"{family}-{category}",
        "family": family,
        "domain": domain,
        "label": LABELS[category],
        "category": category,
        "split": "",
        "a": a,
        "b": b,
        "note": note,
    }


def number_rows(rows: list[Row]) -> list[Row]:
    """Give pairs of one family and category distinct ids (``...-2``, ``...-3``)."""
    seen: Counter[str] = Counter()
    for row in rows:
        seen[row["id"]] += 1
        if seen[row["id"]] > 1:
            row["id"] = f"{row['id']}-{seen[row['id']]}"
    return rows


def load_seed(name: str, seed_set: SeedSet = MAIN) -> Any:
    return json.loads((seed_set.seed_dir / f"{name}.json").read_text(encoding="utf-8"))


def as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


# ------------------------------------------------------------------------------ support questions


def _tidy(text: str) -> str:
    return re.sub(r"\s{2,}", " ", text).strip()


def base_text(marked: str) -> str:
    """The stored question: every marker keeps its old text, swap brackets removed."""
    return _tidy(_SWAP.sub(r"\1", _MARKER.sub(r"\1", marked)))


_AN_BEFORE_CONSONANT = frozenset("hour hours honest mri".split())
_A_BEFORE_VOWEL = frozenset("one one-off once user users uk us usb euro euros university unit union useful".split())


def article_for(word: str) -> str:
    """'a' or 'an' before ``word``, by sound for the few words that need it."""
    word = word.lower()
    if word in _AN_BEFORE_CONSONANT:
        return "an"
    if word in _A_BEFORE_VOWEL:
        return "a"
    return "an" if word[:1] in "aeiou" else "a"


def splice(text: str, start: int, end: int, new: str) -> str:
    """``text[start:end]`` replaced by ``new``, with an 'a'/'an' right before it made to agree."""
    head = text[:start]
    article = re.search(r"(?i)\b(an?) $", head)
    first = re.match(r"[\w-]+", new)
    if article and first:
        fixed = article_for(first.group())
        fixed = fixed.capitalize() if article.group(1)[0].isupper() else fixed
        head = head[: article.start(1)] + fixed + " "
    return head + new + text[end:]


def _with_marker(marked: str, chosen: int) -> str:
    """The question with marker ``chosen`` switched to its new text and every other marker kept."""
    out, pos = "", 0
    for i, match in enumerate(_MARKER.finditer(marked)):
        out += marked[pos : match.start()]
        out = splice(out, len(out), len(out), match.group(2)) if i == chosen else out + match.group(1)
        pos = match.end()
    return _tidy(_SWAP.sub(r"\1", out + marked[pos:]))


def swap_spans(text: str, first: tuple[int, int], second: tuple[int, int], a: str, b: str) -> str:
    """``text`` with the span ``first`` replaced by ``b`` and the later span ``second`` by ``a``."""
    return splice(splice(text, *second, a), *first, b)


def marker_traps(marked: str) -> list[tuple[str, str, str]]:
    """``(category, text, note)`` for each ``[old>new:X]`` marker and for a ``<x> ... <y>`` swap."""
    traps = []
    for i, (old, new, code) in enumerate(_MARKER.findall(marked)):
        if code not in TRAP_CODES:
            raise ValueError(f"unknown trap code {code!r} in {marked!r}")
        note = f"'{old.strip()}' -> '{new.strip()}'" if old.strip() else f"added '{new.strip()}'"
        traps.append((TRAP_CODES[code], _with_marker(marked, i), note))
    spans = _SWAP.findall(marked)
    if spans:
        if len(spans) != 2:
            raise ValueError(f"a swap needs exactly two <...> spans: {marked!r}")
        plain = _MARKER.sub(r"\1", marked)
        first, second = (m.span() for m in _SWAP.finditer(plain))
        text = swap_spans(plain, first, second, spans[0], spans[1])
        traps.append((TRAP_CODES["D"], _tidy(text), f"'{spans[0]}' and '{spans[1]}' swapped"))
    return traps


def first_word(text: str) -> str:
    return text.split(" ", 1)[0].lower().strip(",.?!:")


def near_case(text: str, rng: Random) -> tuple[str, str] | None:
    options = [(text.lower(), "all lower case"), (text.lower(), "all lower case"), (text.upper(), "all upper case")]
    if text[:1].isupper() and first_word(text) in _OPENERS:
        options += [(text[0].lower() + text[1:], "first letter lower case")] * 2
    options = [option for option in options if option[0] != text]
    return rng.choice(options) if options else None


def _drop_apostrophes(text: str) -> str:
    def fix(match: re.Match[str]) -> str:
        word, tail = match.group(1), match.group(2)
        if tail == "s" and word.lower() not in _APOSTROPHE_S_WORDS:
            return match.group(0)
        return word + tail

    return re.sub(r"\b(\w+)'(t|m|s|ve|re|ll|d)\b", fix, text)


_PUNCTUATION_OPS: dict[str, Callable[[str], str]] = {
    "final mark dropped": lambda t: t.rstrip("?.!"),
    "'??' at the end": lambda t: t[:-1] + "??" if t.endswith("?") else t,
    "'?!' at the end": lambda t: t[:-1] + "?!" if t.endswith("?") else t,
    "space before '?'": lambda t: t[:-1] + " ?" if t.endswith("?") else t,
    "'.' instead of '?'": lambda t: t[:-1] + "." if t.endswith("?") else t,
    "commas dropped": lambda t: re.sub(r",(?=\s)", "", t),
    "apostrophes dropped": _drop_apostrophes,
    "'...' instead of a comma": lambda t: re.sub(r",(?=\s)", "...", t, count=1),
}


def _same_words(a: str, b: str) -> bool:
    return _WORD.findall(a.replace("'", "").lower()) == _WORD.findall(b.replace("'", "").lower())


def near_punctuation(text: str, rng: Random) -> tuple[str, str] | None:
    names = [name for name, op in _PUNCTUATION_OPS.items() if op(text) != text]
    if not names:
        return None
    out, applied = text, []
    for name in rng.sample(names, k=min(len(names), rng.choice((1, 1, 2)))):
        changed = _PUNCTUATION_OPS[name](out)
        if changed != out:
            out, applied = changed, [*applied, name]
    if out == text or not _same_words(out, text):
        return None
    return out, "punctuation: " + ", ".join(applied)


def _typo_candidates(word: str, rng: Random) -> list[str]:
    """Swapped, missing and doubled letters inside the word (never the first letter)."""
    out = []
    for i in range(1, len(word) - 1):
        if word[i] != word[i + 1]:
            out.append(word[:i] + word[i + 1] + word[i] + word[i + 2 :])
        out.append(word[:i] + word[i + 1 :])
        out.append(word[:i] + word[i] + word[i:])
    rng.shuffle(out)
    return out


def near_typo(text: str, rng: Random, vocabulary: frozenset[str]) -> tuple[str, str] | None:
    """1-2 realistic typos in ordinary lower-case words of 5+ letters (not numbers or names)."""
    spans = [
        m.span()
        for m in _WORD.finditer(text)
        if len(m.group()) >= 5 and m.group().islower() and "'" not in text[max(0, m.start() - 1) : m.end() + 1]
    ]
    if not spans:
        return None
    picked = sorted(rng.sample(spans, k=min(len(spans), rng.choice((1, 1, 2)))), reverse=True)
    notes = []
    for start, end in picked:
        word = text[start:end]
        typo = next((c for c in _typo_candidates(word, rng) if c not in vocabulary), None)
        if typo is None:
            continue
        text = text[:start] + typo + text[end:]
        notes.append(f"'{word}' -> '{typo}'")
    return (text, "typos: " + ", ".join(reversed(notes))) if notes else None


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:] if first_word(text) in _OPENERS else text


def near_filler(text: str, rng: Random) -> tuple[str, str] | None:
    mode = rng.choice(("prefix", "prefix", "prefix", "suffix", "suffix", "both", "please"))
    if mode == "please":
        match = re.match(r"(Can|Could) you ", text)
        if match:
            return text[: match.end()] + "please " + text[match.end() :], "filler: 'please'"
        mode = "prefix"
    out, added = text, []
    if mode in ("prefix", "both"):
        prefix = rng.choice(_PREFIXES)
        out = prefix + (_lower_first(out) if prefix.endswith((", ", ": ")) else out)
        added.append(prefix.strip())
    if mode in ("suffix", "both"):
        suffix = rng.choice(_SUFFIXES)
        out = out + suffix
        added.append(suffix.strip())
    return out, "filler: " + " + ".join(f"'{a}'" for a in added)


def near_variant(category: str, text: str, rng: Random, vocabulary: frozenset[str]) -> tuple[str, str] | None:
    if category == "near_typo":
        return near_typo(text, rng, vocabulary)
    return {"near_case": near_case, "near_punctuation": near_punctuation, "near_filler": near_filler}[category](
        text, rng
    )


def noisy_trap(text: str, note: str, rng: Random) -> tuple[str, str]:
    """Sometimes give a trap a harmless surface change too, so surface noise never means 'hit'."""
    if rng.random() >= TRAP_NOISE_RATE:
        return text, note
    variant = near_case(text, rng) if rng.random() < 0.5 else near_punctuation(text, rng)
    return (variant[0], f"{note}; also {variant[1]}") if variant else (text, note)


def support_hits(base: str, seed: dict[str, Any]) -> list[tuple[str, str, str]]:
    hits = [("near_clause_order", text, "same clauses, other order") for text in as_list(seed.get("c"))]
    hits += [("paraphrase_words", text, "other words, same meaning") for text in as_list(seed.get("w"))]
    hits += [("paraphrase_form", text, "other question form, same meaning") for text in as_list(seed.get("f"))]
    return hits


def support_traps(seed: dict[str, Any]) -> list[tuple[str, str, str]]:
    traps = marker_traps(seed["q"])
    for code, text, note in seed.get("t", []):
        traps.append((TRAP_CODES[code], text, note))
    return traps


def _once(phrase: str, text: str) -> re.Match[str] | None:
    """The only whole-word occurrence of ``phrase`` in ``text``, if there is exactly one."""
    matches = list(re.finditer(rf"(?<![A-Za-z']){re.escape(phrase)}(?![A-Za-z'])", text))
    return matches[0] if len(matches) == 1 else None


def reworded_traps(seed: dict[str, Any], hits: Sequence[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """A marker's change applied to a hand-written rewording: a trap that is not a one-word edit of ``a``."""
    out = []
    for _, text, _ in hits:
        for old, new, code in _MARKER.findall(seed["q"]):
            match = _once(old, text) if old.strip() else None
            if match:
                changed = splice(text, match.start(), match.end(), new)
                out.append((TRAP_CODES[code], changed, f"'{old}' -> '{new}' in a reworded question"))
        swapped = _swapped_in(seed["q"], text)
        if swapped:
            out.append((TRAP_CODES["D"], *swapped))
    return out


def _swapped_in(marked: str, text: str) -> tuple[str, str] | None:
    """``text`` with the seed's two ``<...>`` spans swapped, when both occur once and in order."""
    spans = _SWAP.findall(marked)
    if len(spans) != 2:
        return None
    first, second = _once(spans[0], text), _once(spans[1], text)
    if not (first and second and first.end() <= second.start()):
        return None
    swapped = swap_spans(text, first.span(), second.span(), spans[0], spans[1])
    return swapped, f"'{spans[0]}' and '{spans[1]}' swapped in a reworded question"


def support_family(
    family: str, domain: str, seed: dict[str, Any], near: Sequence[str], vocabulary: frozenset[str]
) -> list[Row]:
    rng = Random(f"{RANDOM_SEED}:{family}")
    base = base_text(seed["q"])
    if re.search(r"[\[\]<>{}]", base):
        raise ValueError(f"{family}: stray marker in {seed['q']!r}")
    hits = support_hits(base, seed)
    rows = [make_row(family, domain, cat, base, text, note) for cat, text, note in hits]
    for category in near:
        variant = near_variant(category, base, rng, vocabulary)
        if variant is not None:
            rows.append(make_row(family, domain, category, base, *variant))
    traps = support_traps(seed)
    candidates = reworded_traps(seed, hits)
    if candidates and rng.random() < REWORDED_TRAP_RATE:
        traps.append(rng.choice(candidates))
    for category, text, note in traps:
        rows.append(make_row(family, domain, category, base, *noisy_trap(text, note, rng)))
    return number_rows(rows)


def seed_vocabulary(seeds: Iterable[dict[str, Any]]) -> frozenset[str]:
    """Every word written in the seeds: a 'typo' that spells one of them is a real word, not a typo."""
    words: set[str] = set()
    for seed in seeds:
        for value in seed.values():
            words.update(w.lower() for w in _WORD.findall(json.dumps(value)))
    return frozenset(words)


def support_rows(seed_set: SeedSet = MAIN) -> list[Row]:
    domains = {domain: load_seed(domain, seed_set) for domain in seed_set.support_domains}
    vocabulary = seed_vocabulary(seed for seeds in domains.values() for seed in seeds)
    rows: list[Row] = []
    cycle = 0
    for domain, seeds in domains.items():
        for index, seed in enumerate(seeds, start=1):
            count = NEAR_PER_FAMILY[index % len(NEAR_PER_FAMILY)]
            near = [NEAR_CATEGORIES[(cycle + k) % len(NEAR_CATEGORIES)] for k in range(count)]
            cycle += count
            family = f"{seed_set.family_prefix}{domain}-{index:03d}"
            rows += support_family(family, domain, seed, near, vocabulary)
    return rows


# --------------------------------------------------------------------------------- word problems

_OPS: dict[type[ast.operator], Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def evaluate(expr: str, values: dict[str, Fraction]) -> Fraction:
    """Exact value of a seed's arithmetic expression (names, numbers, + - * / and brackets only)."""

    def walk(node: ast.expr) -> Fraction:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        raise ValueError(f"unsupported expression {expr!r}")

    return walk(ast.parse(expr, mode="eval").body)


def is_number(value: str) -> bool:
    return re.fullmatch(r"\d+(\.\d+)?", value) is not None


def numbers_of(slots: dict[str, str]) -> dict[str, Fraction]:
    return {k: Fraction(v) for k, v in slots.items() if is_number(v)}


def show(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):.2f}"


def sensible(answer: Fraction, reference: Fraction) -> bool:
    """A non-negative answer as 'round' as the reference one (whole, or whole cents)."""
    if answer < 0:
        return False
    if reference.denominator == 1:
        return answer.denominator == 1
    return (answer * 100).denominator == 1


def _step(value: str) -> Fraction:
    number = Fraction(value)
    if "." in value:
        return Fraction(1, 2)
    if number >= 100 and number % 10 == 0:
        return Fraction(10)
    if number >= 20 and number % 5 == 0:
        return Fraction(5)
    return Fraction(1)


def _format_like(value: Fraction, like: str) -> str:
    return f"{float(value):.2f}" if "." in like else str(value.numerator)


def other_number(seed: dict[str, Any], slots: dict[str, str], slot: str, rng: Random) -> tuple[str, Fraction] | None:
    """Another value for ``slot`` that changes the answer and keeps every number sensible."""
    answer = evaluate(seed["expr"], numbers_of(slots))
    deltas = [-3, -2, -1, 1, 2, 3, 4, 5]
    rng.shuffle(deltas)
    taken = {v for k, v in slots.items() if k != slot}
    for delta in deltas:
        value = Fraction(slots[slot]) + delta * _step(slots[slot])
        text = _format_like(value, slots[slot])
        if value <= 1 or text in taken:  # 1 would need a singular noun
            continue
        try:
            new_answer = evaluate(seed["expr"], numbers_of(slots | {slot: text}))
        except ZeroDivisionError:
            continue
        if new_answer != answer and sensible(new_answer, answer) and new_answer > 0:
            return text, new_answer
    return None


def math_number_traps(family: str, seed: dict[str, Any], slots: dict[str, str], fill: int, rng: Random) -> list[Row]:
    """The same template with one number changed; the first fill also gets it in the reworded form."""
    a = seed["q"].format(**slots)
    answer = evaluate(seed["expr"], numbers_of(slots))
    vary = seed.get("vary") or [k for k, v in slots.items() if is_number(v)]
    templates = [(seed["q"], "")] + ([(seed["re"][0], "; b also reworded")] if fill == 0 and seed.get("re") else [])
    rows = []
    for (template, suffix), slot in zip(templates, rng.sample(vary, k=len(vary)) * 2, strict=False):
        change = other_number(seed, slots, slot, rng)
        if change is None:
            continue
        text, new_answer = change
        note = f"'{slots[slot]}' -> '{text}' (answer {show(answer)} -> {show(new_answer)}){suffix}"
        b = template.format(**(slots | {slot: text}))
        rows.append(make_row(family, MATH_DOMAIN, "math_numbers", a, b, note))
    return rows


def math_family(family: str, seed: dict[str, Any]) -> list[Row]:
    rng = Random(f"{RANDOM_SEED}:{family}")
    rows: list[Row] = []
    for fill, slots in enumerate(seed["fill"]):
        a = seed["q"].format(**slots)
        answer = evaluate(seed["expr"], numbers_of(slots))
        if not sensible(answer, answer) or answer <= 0:
            raise ValueError(f"{family}: answer {answer} for {slots}")
        for template in seed["re"]:
            note = f"same numbers and names, reworded (answer {show(answer)})"
            rows.append(make_row(family, MATH_DOMAIN, "math_reworded", a, template.format(**slots), note))
        rows += math_number_traps(family, seed, slots, fill, rng)
        for template, expr, what in seed.get("dir", []):
            other = evaluate(expr, numbers_of(slots))
            if other == answer or not sensible(other, answer):
                raise ValueError(f"{family}: reversed answer {other} for {slots}")
            note = f"{what} (answer {show(answer)} -> {show(other)})"
            rows.append(make_row(family, MATH_DOMAIN, "math_direction", a, template.format(**slots), note))
    return number_rows(rows)


def math_rows(seed_set: SeedSet = MAIN) -> list[Row]:
    seeds = enumerate(load_seed("math", seed_set), 1)
    families = ((f"{seed_set.family_prefix}math-{i:03d}", seed) for i, seed in seeds)
    return [row for family, seed in families for row in math_family(family, seed)]


# --------------------------------------------------------------------------------- conversations


def chat(turns: Sequence[str], last: str, first_role: str = "user") -> list[Message]:
    roles = ("user", "assistant") if first_role == "user" else ("assistant", "user")
    messages = [{"role": roles[i % 2], "content": text} for i, text in enumerate(turns)]
    messages.append({"role": "user", "content": last})
    if messages[-2]["role"] != "assistant":
        raise ValueError(f"turns must alternate and end with the assistant: {turns!r}")
    return messages


def replaced(turns: Sequence[str], changes: dict[str, str]) -> list[str]:
    """Apply every ``old -> new`` change (longest first); each must occur somewhere."""
    out = list(turns)
    for old in sorted(changes, key=len, reverse=True):
        if not any(old in turn for turn in out):
            raise ValueError(f"detail {old!r} not found in {turns!r}")
        out = [_replace_all(turn, old, changes[old]) for turn in out]
    return out


def _replace_all(text: str, old: str, new: str) -> str:
    for match in reversed(list(re.finditer(re.escape(old), text))):
        text = splice(text, match.start(), match.end(), new)
    return text


def describe(changes: dict[str, str]) -> str:
    return "; ".join(f"'{old}' -> '{new}'" for old, new in changes.items())


def conv_hits(scenario: dict[str, Any], pools: dict[str, Any], rng: Random) -> list[tuple[str, Any, str]]:
    ctx, last = scenario["ctx"], scenario["last"]
    hits: list[tuple[str, Any, str]] = [
        ("conv_same_context_reworded", chat(scenario["ctx2"], last), "earlier turns reworded, same details"),
        ("conv_identical_last_reworded", chat(ctx, scenario["last2"]), "same context, last message reworded"),
    ]
    if len(ctx) == 2:
        question, answer = rng.choice(pools["unrelated"])
        hits.append(("conv_unrelated_earlier", chat([question, answer, *ctx], last), f"unrelated first: {question!r}"))
        hello, reply = rng.choice(pools["greetings"] + ([] if scenario.get("offer") else pools["thanks"]))
        if [hello, reply] in pools["thanks"]:
            turns, where = [*ctx, hello, reply], "before the last message"
        else:
            turns, where = [hello, reply, *ctx], "first"
        hits.append(("conv_small_talk", chat(turns, last), f"small talk {where}: {hello!r}"))
    else:
        greeting = rng.choice(pools["openers"])
        note = f"assistant greeting first: {greeting!r}"
        hits.append(("conv_small_talk", chat([greeting, *ctx], last, "assistant"), note))
    return hits


def conv_traps(scenario: dict[str, Any], partner: dict[str, Any]) -> list[tuple[str, Any, str]]:
    ctx, last = scenario["ctx"], scenario["last"]
    note = f"same last message after another context: {scenario['topic']} vs {partner['topic']}"
    traps: list[tuple[str, Any, str]] = [("conv_different_context", chat(partner["ctx"], last), note)]
    for changes in scenario.get("detail", []):
        traps.append(("conv_changed_detail", chat(replaced(ctx, changes), last), describe(changes)))
    if scenario.get("offer"):
        offered, *others = scenario["offer"]
        if offered not in ctx[-1]:
            raise ValueError(f"offer {offered!r} is not in the last assistant turn")
        for other in others:
            changes = {offered: other}
            traps.append(("conv_different_offer", chat(replaced(ctx, changes), last), describe(changes)))
    return traps


def couples(scenarios: Sequence[dict[str, Any]]) -> list[list[int]]:
    """Scenarios sharing a last message, in pairs (a triple for an odd group), in seed order."""
    groups: dict[str, list[int]] = {}
    for i, scenario in enumerate(scenarios):
        groups.setdefault(scenario["last"], []).append(i)
    out = []
    for members in groups.values():
        if len(members) < 2:
            raise ValueError(f"last message {scenarios[members[0]]['last']!r} needs a second context")
        chunks = [members[i : i + 2] for i in range(0, len(members), 2)]
        if len(chunks[-1]) == 1:
            last = chunks.pop()
            chunks[-1] += last
        out += chunks
    return out


def conversation_rows(seed_set: SeedSet = MAIN) -> tuple[list[Row], list[set[str]]]:
    """All conversation pairs, and the families that must share a split (each couple)."""
    seeds = load_seed("conversations", seed_set)
    conv = f"{seed_set.family_prefix}conv"
    scenarios = seeds["scenarios"]
    rows: list[Row] = []
    units = []
    for members in couples(scenarios):
        units.append({f"{conv}-{i + 1:03d}" for i in members})
        for k, i in enumerate(members):
            family, scenario = f"{conv}-{i + 1:03d}", scenarios[i]
            partner = scenarios[members[(k + 1) % len(members)]]
            rng = Random(f"{RANDOM_SEED}:{family}")
            a = chat(scenario["ctx"], scenario["last"])
            pairs = conv_hits(scenario, seeds, rng) + conv_traps(scenario, partner)
            rows += number_rows([make_row(family, scenario["domain"], c, a, b, n) for c, b, n in pairs])
    return sorted(rows, key=lambda r: (int(r["family"].split("-")[-1]), r["id"])), units


# ------------------------------------------------------------------------------------------ splits


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def text_key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def family_units(rows: Sequence[Row], extra: Iterable[set[str]] = ()) -> list[set[str]]:
    """Families joined when they share any question text (or are listed together in ``extra``)."""
    parent: dict[str, str] = {row["family"]: row["family"] for row in rows}

    def root(f: str) -> str:
        while parent[f] != f:
            parent[f] = parent[parent[f]]
            f = parent[f]
        return f

    def join(f: str, g: str) -> None:
        parent[root(f)] = root(g)

    owner: dict[str, str] = {}
    for row in rows:
        for text in (text_key(row["a"]), text_key(row["b"])):
            join(row["family"], owner.setdefault(text, row["family"]))
    for unit in extra:
        first, *rest = sorted(unit)
        for other in rest:
            join(other, first)
    units: dict[str, set[str]] = {}
    for family in parent:
        units.setdefault(root(family), set()).add(family)
    return list(units.values())


Key = tuple[str, ...]
_WEIGHTS: dict[str, float] = {"all": 1.0, "label": 1.0, "domain": 2.0, "category": 2.0, "cell": 0.5}
SMALL_SET = 200
"""Sets with at most this many units (the conversations) also get pair swaps and restarts."""
RESTARTS = 24


def _needs(rows: Iterable[Row]) -> Counter[Key]:
    need: Counter[Key] = Counter()
    for row in rows:
        for key in (("all",), ("label", row["label"]), ("domain", row["domain"]), ("category", row["category"])):
            need[key] += 1
        need[("cell", row["domain"], row["category"])] += 1
    return need


class _Balance:
    """``calibration - heldout`` counts per key; the cost is their weighted, size-normalised sum."""

    def __init__(self, units: Sequence[Counter[Key]]) -> None:
        totals: Counter[Key] = sum(units, Counter())
        self.weight = {k: _WEIGHTS[k[0]] / max(1.0, n) ** 0.5 for k, n in totals.items()}
        self.diff: Counter[Key] = Counter()

    def delta(self, change: Iterable[tuple[Key, int]]) -> float:
        return sum(self.weight[k] * (abs(self.diff[k] + d) - abs(self.diff[k])) for k, d in change)

    def cost(self) -> float:
        return sum(self.weight[k] * abs(d) for k, d in self.diff.items())

    def move(self, change: Iterable[tuple[Key, int]]) -> None:
        for k, d in change:
            self.diff[k] += d


def _shift(need: Counter[Key], side: int) -> list[tuple[Key, int]]:
    """The change in ``diff`` when a unit joins split ``side`` (+1 calibration, -1 heldout)."""
    return [(k, side * n) for k, n in need.items()]


def _swap(first: Counter[Key], second: Counter[Key]) -> list[tuple[Key, int]]:
    """``first`` leaves calibration for heldout while ``second`` goes the other way."""
    return _shift(first, -2) + _shift(second, 2)


def _improve(units: Sequence[Counter[Key]], side: list[int], balance: _Balance) -> None:
    """Move single units, and for small sets swap pairs across the splits, while that helps."""
    improved = True
    while improved:
        improved = False
        for i, need in enumerate(units):
            change = _shift(need, -2 * side[i])
            if balance.delta(change) < -1e-9:
                balance.move(change)
                side[i], improved = -side[i], True
        if len(units) > SMALL_SET:
            continue
        for i in range(len(units)):
            for j in range(len(units)):
                if side[i] == 1 and side[j] == -1 and balance.delta(change := _swap(units[i], units[j])) < -1e-9:
                    balance.move(change)
                    side[i], side[j], improved = -1, 1, True


def _split_once(names: Sequence[str], units: Sequence[Counter[Key]], salt: str) -> tuple[float, list[int]]:
    """Greedy in the order of a salted hash, then local search; returns the cost and each unit's side."""
    balance = _Balance(units)
    side = [0] * len(units)
    for i in sorted(range(len(units)), key=lambda i: digest(salt + names[i])):
        costs = {s: balance.delta(_shift(units[i], s)) for s in (1, -1)}
        side[i] = (1 if int(digest(names[i]), 16) % 2 else -1) if costs[1] == costs[-1] else min(costs, key=costs.get)
        balance.move(_shift(units[i], side[i]))
    _improve(units, side, balance)
    return balance.cost(), side


def assign_splits(rows: list[Row], extra: Iterable[set[str]] = ()) -> None:
    """Whole units of families to one split each, keeping labels, domains and categories near 50/50.

    A unit is the set of families that share any question text (or are listed together in
    ``extra``).  Deterministic: the greedy order comes from a hash of the unit's first family.
    """
    by_family: dict[str, list[Row]] = {}
    for row in rows:
        by_family.setdefault(row["family"], []).append(row)
    members = sorted(family_units(rows, extra), key=min)
    names = [min(unit) for unit in members]
    units = [_needs(row for family in sorted(unit) for row in by_family[family]) for unit in members]
    salts = [f"{RANDOM_SEED}:{k}:" for k in range(RESTARTS if len(units) <= SMALL_SET else 1)]
    _, side = min((_split_once(names, units, salt) for salt in salts), key=lambda result: result[0])
    for unit, s in zip(members, side, strict=True):
        for family in unit:
            for row in by_family[family]:
                row["split"] = SPLITS[0] if s == 1 else SPLITS[1]


def drop_duplicates(rows: list[Row]) -> list[Row]:
    seen: set[tuple[str, str]] = set()
    out = []
    for row in rows:
        key = (text_key(row["a"]), text_key(row["b"]))
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


# ---------------------------------------------------------------------------------------- output


def build(seed_set: SeedSet = MAIN) -> tuple[list[Row], list[Row]]:
    """The single-question pairs and the conversation pairs, with their splits, in file order."""
    pairs = drop_duplicates(support_rows(seed_set) + math_rows(seed_set))
    conversations, units = conversation_rows(seed_set)
    conversations = drop_duplicates(conversations)
    if seed_set.split is None:
        assign_splits(pairs)
        assign_splits(conversations, units)
    else:
        for row in pairs + conversations:
            row["split"] = seed_set.split
    return pairs, conversations


def render(rows: Iterable[Row]) -> str:
    return "".join(json.dumps({k: row[k] for k in FIELDS}, ensure_ascii=False) + "\n" for row in rows)


def _table(title: str, rows: Sequence[Row], key: str, order: Sequence[str]) -> list[str]:
    counts = Counter((row[key], row["split"]) for row in rows)
    splits = [split for split in (*SPLITS, FRESH_SPLIT) if any(row["split"] == split for row in rows)]
    lines = [f"| {title} | {' | '.join(splits)} | total |", "|---|" + "---:|" * (len(splits) + 1)]
    for name in order:
        cells = [counts[(name, split)] for split in splits]
        if sum(cells):
            lines.append(f"| {name} | {' | '.join(map(str, cells))} | {sum(cells)} |")
    totals = [sum(1 for row in rows if row["split"] == split) for split in splits]
    lines.append(f"| **all** | {' | '.join(map(str, totals))} | {sum(totals)} |")
    return lines


def stats(pairs: Sequence[Row], conversations: Sequence[Row], seed_set: SeedSet = MAIN) -> str:
    domains = (*seed_set.support_domains, MATH_DOMAIN)
    lines = [f"### Single questions ({seed_set.pairs_path.name})", ""]
    lines += _table("label", pairs, "label", ("hit", "trap")) + [""]
    lines += _table("category", pairs, "category", (*HIT_CATEGORIES, *TRAP_CATEGORIES)) + [""]
    lines += _table("domain", pairs, "domain", domains) + [""]
    lines += [_shares(pairs), ""]
    lines += [f"### Conversations ({seed_set.conversations_path.name})", ""]
    lines += _table("label", conversations, "label", ("hit", "trap")) + [""]
    lines += _table("category", conversations, "category", (*CONV_HIT_CATEGORIES, *CONV_TRAP_CATEGORIES)) + [""]
    lines += _table("domain", conversations, "domain", domains) + [""]
    hits = sum(1 for row in conversations if row["label"] == "hit") / len(conversations)
    scenarios = len({row["family"] for row in conversations})
    lines.append(f"{scenarios} conversation scenarios; hits {hits:.1%}, traps {1 - hits:.1%}.")
    return "\n".join(lines)


def _shares(pairs: Sequence[Row]) -> str:
    families = Counter(row["domain"] == MATH_DOMAIN for row in {row["family"]: row for row in pairs}.values())
    math = sum(1 for row in pairs if row["domain"] == MATH_DOMAIN) / len(pairs)
    hits = sum(1 for row in pairs if row["label"] == "hit") / len(pairs)
    return (
        f"{families[False]} support questions and {families[True]} word-problem templates (families); "
        f"support {1 - math:.1%} and math {math:.1%} of the pairs; hits {hits:.1%}."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stats", action="store_true", help="print counts per split/category/domain, write nothing")
    parser.add_argument("--check", action="store_true", help="fail if the checked-in files are not up to date")
    parser.add_argument("--fresh", action="store_true", help="the fresh set (reuse_seeds_fresh/), all held out")
    args = parser.parse_args(argv)
    seed_set = FRESH if args.fresh else MAIN
    pairs, conversations = build(seed_set)
    outputs = {seed_set.pairs_path: render(pairs), seed_set.conversations_path: render(conversations)}
    if args.stats:
        print(stats(pairs, conversations, seed_set))
        return 0
    if args.check:
        stale = [p.name for p, text in outputs.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
        print("stale: " + ", ".join(stale) if stale else "up to date")
        return 1 if stale else 0
    for path, text in outputs.items():
        path.write_text(text, encoding="utf-8")
    print(f"wrote {len(pairs)} pairs to {seed_set.pairs_path}, {len(conversations)} to {seed_set.conversations_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
