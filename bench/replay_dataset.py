"""Replay stream over GSM-Symbolic templates, graded by similarity level.

Levels follow "Can Past Experience Accelerate LLM Reasoning?":

* ``S0`` -- first sighting of a problem instance (builds the memory);
* ``S1`` -- the exact same question text again;
* ``S2`` -- the same question reworded, with identical numbers and names;
* ``S3`` -- the same template with other numbers/names (a different instance, usually a
  different gold answer -- reusing the S0 answer here would be wrong);
* ``S4`` -- a question from a template not used by any group, chosen to need the same kind of
  arithmetic as the group's template.

The stream is ordered level by level (all S0, then all S1, ... S4) so the memory is built
before it can help.  Everything is deterministic given ``seed``.

Templates come from the ``gsm_symbolic`` dataset of the ``reasoning-gym`` package: each
generator ``generate_<k>(rng, difficulty)`` produces a question with random names and numbers
plus its answer.  Calling a generator with ``random.Random(instance_seed)`` gives one instance.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from random import Random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Level = Literal["S0", "S1", "S2", "S3", "S4"]
LEVELS: tuple[Level, ...] = ("S0", "S1", "S2", "S3", "S4")

DEFAULT_MAX_CHARS = 300
"""Templates whose probed questions reach this length are skipped (a 0.5B model must have a chance)."""

# Templates that pass the automatic filters but whose wording is garbled or whose answer is
# ill-posed, so a model cannot reasonably be expected to solve them.
TEMPLATE_DENYLIST: dict[int, str] = {
    14: "garbled multiplier ('exercise for 3 the amount of time ...')",
    46: "repeating-decimal water fractions like 0.6666666666666666",
    52: "garbled count ('writes it in full 4')",
    49: "mixes cents and pounds; gold is a truncated non-integer count",
    53: "ill-posed probability comparison on an n-sided die",
}

_PROBE_SEEDS: tuple[int, ...] = tuple(range(24))
_MAX_SEED_TRIES = 200


class ReplayItem(BaseModel):
    """One question of the replay stream."""

    model_config = ConfigDict(frozen=True)

    level: Level
    group: int
    question: str
    gold: str
    template: int = -1
    """gsm_symbolic generator index the question comes from (-1 if unknown)."""
    instance_seed: int = -1
    """Seed passed to the generator's ``random.Random`` (-1 if unknown)."""


# --------------------------------------------------------------------------------------------
# Numbers and answer checking
# --------------------------------------------------------------------------------------------

# A number not glued to a preceding word character or dot: "1,234", "12.50", "-3", "$12".
NUMBER_RE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_ANSWER_MARKER_RE = re.compile(r"answer\s*(?:is\b|:|=)|####|\\boxed\{", re.IGNORECASE)


def normalize_number(raw: str) -> str | None:
    """Canonical string for a number: no commas/currency, no trailing zero decimals.

    ``"1,234"`` -> ``"1234"``, ``"$12.00"`` -> ``"12"``, ``"12.50"`` -> ``"12.5"``.
    """
    s = raw.strip().replace(",", "").lstrip("$£€").rstrip(".")
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def numbers_in(text: str) -> list[str]:
    """All numbers in ``text`` in order, normalized (see :func:`normalize_number`)."""
    out = []
    for m in NUMBER_RE.finditer(text):
        n = normalize_number(m.group(0))
        if n is not None:
            out.append(n)
    return out


def extract_final_number(text: str) -> str | None:
    """The model's final numeric answer, normalized, or ``None``.

    If the text has an answer marker ("Answer:", "the answer is", "####", "\\boxed{"), the first
    number after the last marker wins (so "Answer: 42 apples, i.e. 3 dozen" gives 42); otherwise
    the last number in the text.  Commas, currency signs and ".0" decimals are handled.
    """
    if not text:
        return None
    markers = list(_ANSWER_MARKER_RE.finditer(text))
    if markers:
        after = numbers_in(text[markers[-1].end():])
        if after:
            return after[0]
    nums = numbers_in(text)
    return nums[-1] if nums else None


def is_correct(answer_text: str, gold: str) -> bool:
    """Whether the final number of ``answer_text`` equals ``gold`` numerically."""
    got = extract_final_number(answer_text or "")
    want = normalize_number(str(gold))
    if got is None or want is None:
        return False
    return Decimal(got) == Decimal(want)


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateInfo:
    index: int
    max_chars: int
    all_integer: bool
    clean_numbers: bool
    varies: bool
    ops: frozenset[str]
    error: str | None = None


@functools.cache
def _generators() -> dict[int, Callable[..., dict[str, Any]]]:
    from reasoning_gym.arithmetic.gsm_symbolic import generators_00_49, generators_50_99

    gens: dict[int, Callable[..., dict[str, Any]]] = {}
    for mod in (generators_00_49, generators_50_99):
        for name in dir(mod):
            if name.startswith("generate_") and name[len("generate_"):].isdigit():
                gens[int(name[len("generate_"):])] = getattr(mod, name)
    return gens


def _tasks_ok() -> list[int]:
    from reasoning_gym.arithmetic.gsm_symbolic.gsm_symbolic import tasks_ok

    return sorted(tasks_ok)


def generate_instance(template: int, seed: int) -> dict[str, Any]:
    """Raw generator output (``question``, ``answer``, ``metadata``) for one template instance."""
    return _generators()[template](Random(seed), 1.0)


# An arithmetic operator standing alone ("9 girls x 4 boys", "120 clam / 5 clam") or glued
# between digits ("2x+100=152").
_OP_RE = re.compile(r"(?<!\S)([-+*/x×÷])(?!\S)|(?<=\d)([-+*/×÷])(?=\d)")


def _ops_of(cot: str) -> set[str]:
    """Kinds of arithmetic a reference solution uses: subset of {+, -, *, /, %}."""
    ops = set()
    for m in _OP_RE.finditer(cot):
        op = m.group(1) or m.group(2)
        ops.add({"x": "*", "×": "*", "÷": "/"}.get(op, op))
    if "%" in cot:
        ops.add("%")
    return ops


def _integer_gold(answer: Any) -> str | None:
    n = normalize_number(str(answer))
    if n is None or "." in n or n.startswith("-"):
        return None
    return n


def _clean_numbers(question: str) -> bool:
    """No number with more than two decimals (e.g. 0.6666666666666666)."""
    return all(len(n.split(".")[1]) <= 2 for n in numbers_in(question) if "." in n)


@functools.cache
def template_catalog() -> dict[int, TemplateInfo]:
    """Probe every ``tasks_ok`` template over a few seeds and describe it."""
    catalog: dict[int, TemplateInfo] = {}
    for t in _tasks_ok():
        try:
            exs = [generate_instance(t, s) for s in _PROBE_SEEDS]
        except Exception as exc:  # a broken generator is simply not eligible
            catalog[t] = TemplateInfo(t, 0, False, False, False, frozenset(), error=repr(exc))
            continue
        ops: set[str] = set()
        for ex in exs:
            ops |= _ops_of(str(ex.get("metadata", {}).get("answer_cot", "")))
        catalog[t] = TemplateInfo(
            index=t,
            max_chars=max(len(ex["question"]) for ex in exs),
            all_integer=all(_integer_gold(ex["answer"]) is not None for ex in exs),
            clean_numbers=all(_clean_numbers(ex["question"]) for ex in exs),
            varies=len({ex["question"] for ex in exs}) > 1,
            ops=frozenset(ops),
        )
    return catalog


def eligible_templates(max_chars: int = DEFAULT_MAX_CHARS) -> list[int]:
    """Sorted template indices usable for the replay stream.

    A template is eligible when it generates without error, every probed question is shorter
    than ``max_chars``, every probed answer is a non-negative integer, its numbers have at most
    two decimals, its text varies with the seed, and it is not in :data:`TEMPLATE_DENYLIST`.
    """
    return [
        t
        for t, info in sorted(template_catalog().items())
        if info.error is None
        and info.max_chars < max_chars
        and info.all_integer
        and info.clean_numbers
        and info.varies
        and t not in TEMPLATE_DENYLIST
    ]


# "A op B = C" in a reference solution, A not itself the right operand of another operator.
_EQUATION_RE = re.compile(
    r"(?<![\d.])(?<![-+*/x×]\s)(?<![-+*/x×])(\d+(?:\.\d+)?)\s*(?:[a-zA-Z]+(?:/[a-zA-Z]+)?\s+)?"
    r"([-+*/x×])\s*[$£€]?(\d+(?:\.\d+)?)\s*(?:[a-zA-Z]+(?:/[a-zA-Z]+)?\s*)?=\s*[$£€]?(\d+(?:\.\d+)?)"
)


def _truncation_free(cot: str) -> bool:
    """False if the reference solution silently truncates a step (e.g. "1656/60=27", "5*0.5=2",
    "117.10 - 53.10 = 63"): some generators floor non-integer results, which makes the gold wrong
    for that instance."""
    for m in _EQUATION_RE.finditer(cot.replace(",", "")):
        a, op, b, c = float(m[1]), m[2], float(m[3]), float(m[4])
        if op == "/" and b == 0:
            continue
        v = {"+": a + b, "-": a - b, "/": a / b if b else 0.0}.get(op, a * b)
        if 1e-9 < abs(v - c) < 1:
            return False
    return True


def valid_instance(ex: dict[str, Any], max_chars: int) -> str | None:
    """Gold answer if this instance is usable, else None."""
    gold = _integer_gold(ex["answer"])
    if gold is None or len(ex["question"]) >= max_chars or not _clean_numbers(ex["question"]):
        return None
    if not _truncation_free(str(ex.get("metadata", {}).get("answer_cot", ""))):
        return None
    return gold


def _draw_instance(
    template: int,
    rng: Random,
    max_chars: int,
    accept: Callable[[str, str], bool] = lambda q, g: True,
) -> tuple[int, str, str]:
    """Draw seeds from ``rng`` until an instance is valid and accepted -> (seed, question, gold)."""
    for _ in range(_MAX_SEED_TRIES):
        seed = rng.randrange(2**31)
        ex = generate_instance(template, seed)
        gold = valid_instance(ex, max_chars)
        if gold is not None and accept(ex["question"], gold):
            return seed, ex["question"], gold
    raise RuntimeError(f"no acceptable instance of gsm_symbolic template {template}")


# --------------------------------------------------------------------------------------------
# Rule-based rewording (S2)
# --------------------------------------------------------------------------------------------

# (prefix, suffix) wrappers.  No digits, no names: numbers and names stay untouched.
_WRAPPERS: tuple[tuple[str, str], ...] = (
    ("Here is a word problem: ", ""),
    ("Quick question: ", " Please work it out."),
    ("Please solve the following problem. ", ""),
    ("Consider this situation. ", " Thanks!"),
    ("Try this one: ", " Good luck!"),
)
# Lead-ins put before a final question that starts with How/What (which gets lower-cased).
_LEADINS: tuple[str, ...] = ("So, ", "Given all this, ", "With that in mind, ", "Then tell me: ")
# Meaning-preserving phrase swaps.  Lower-case patterns only (except the fixed How-phrases), so
# capitalised names can never be touched.
_SWAPS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"\bHow much money\b", "What amount of money"),
        (r"\bhow much money\b", "what amount of money"),
        (r"\bHow long will it take\b", "How much time will it take"),
        (r"\bhow long will it take\b", "how much time will it take"),
        (r"\bHow old (is|was) ", r"What \1 the age of "),
        (r"\bbought\b", "purchased"),
        (r"\bbuys\b", "purchases"),
        (r"\bbuy\b", "purchase"),
        (r"\bwants to\b", "would like to"),
        (r"\bcalculate\b", "compute"),
        (r"\bin total\b", "altogether"),
        (r"\bfinished\b", "completed"),
        (r"\bstarted\b", "began"),
    )
)
_FINAL_QUESTION_RE = re.compile(r"(?:^|(?<=[.!?] ))(How|What)\b")

REWORD_FUNCTION_WORDS: frozenset[str] = frozenset(
    w
    for phrase in [p + s for p, s in _WRAPPERS] + list(_LEADINS) + ["What How"]
    for w in re.findall(r"\b[A-Z][a-z]*\b", phrase)
)
"""Capitalised words the rewording may add or remove; every other capitalised token is kept."""


def reword(question: str, variant: int = 0) -> str:
    """Deterministic, meaning-preserving rewording that keeps every number and name.

    Applies phrase swaps ("bought" -> "purchased", "How much money" -> "What amount of money",
    ...), adds a lead-in before a final How/What question, and wraps the text in a prefix/suffix
    chosen by ``variant``.  The result always differs from ``question``.
    """
    text = question
    for pat, rep in _SWAPS:
        text = pat.sub(rep, text)
    finals = list(_FINAL_QUESTION_RE.finditer(text))
    if finals:
        m = finals[-1]
        lead = _LEADINS[variant % len(_LEADINS)]
        text = text[: m.start()] + lead + m.group(1).lower() + text[m.end():]
    prefix, suffix = _WRAPPERS[variant % len(_WRAPPERS)]
    return f"{prefix}{text}{suffix}"


# --------------------------------------------------------------------------------------------
# Stream
# --------------------------------------------------------------------------------------------


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _draw_s3(template: int, rng: Random, max_chars: int, q0: str, gold0: str) -> tuple[int, str, str]:
    """Another instance of ``template``: other numbers, and a different gold when possible."""
    nums0 = sorted(numbers_in(q0))

    def other_numbers(q: str, gold: str) -> bool:
        return q != q0 and sorted(numbers_in(q)) != nums0

    try:
        return _draw_instance(template, rng, max_chars, lambda q, g: other_numbers(q, g) and g != gold0)
    except RuntimeError:  # a template with very few possible answers: settle for other numbers
        return _draw_instance(template, rng, max_chars, other_numbers)


def build_replay_stream(
    groups: int = 10, seed: int = 0, max_chars: int = DEFAULT_MAX_CHARS, templates: Sequence[int] | None = None
) -> list[ReplayItem]:
    """The replay stream: ``groups`` items per level, ordered S0..., S1..., S2..., S3..., S4....

    Templates: the eligible templates (:func:`eligible_templates`) are shuffled with ``seed``;
    the first ``groups`` become the group templates.  Each group's S4 template is the unused
    eligible template whose set of arithmetic operations (+, -, *, /, %, read from the reference
    solution) is most similar to the group template's, ties broken by the seeded order.
    ``templates`` narrows the pool (for example to the ones a small model can solve, see
    ``bench.probe_templates``); only eligible ones are kept.
    """
    if groups < 1:
        raise ValueError("groups must be >= 1")
    pool = eligible_templates(max_chars)
    if templates is not None:
        wanted = set(templates)
        pool = [t for t in pool if t in wanted]
    if len(pool) < 2 * groups:
        raise ValueError(
            f"only {len(pool)} eligible templates with max_chars={max_chars}; "
            f"need {2 * groups} for {groups} groups (raise max_chars or lower groups)"
        )
    rng = Random(seed)
    order = list(pool)
    rng.shuffle(order)
    group_templates = order[:groups]
    spare = order[groups:]
    catalog = template_catalog()

    per_level: dict[str, list[ReplayItem]] = {lv: [] for lv in LEVELS}
    for g, t in enumerate(group_templates):
        s0_seed, q0, gold0 = _draw_instance(t, rng, max_chars)
        s3_seed, q3, gold3 = _draw_s3(t, rng, max_chars, q0, gold0)

        ops = catalog[t].ops
        t4 = max(spare, key=lambda c: (_jaccard(ops, catalog[c].ops), -spare.index(c)))
        spare.remove(t4)
        s4_seed, q4, gold4 = _draw_instance(t4, rng, max_chars)

        per_level["S0"].append(ReplayItem(level="S0", group=g, question=q0, gold=gold0,
                                          template=t, instance_seed=s0_seed))
        per_level["S1"].append(ReplayItem(level="S1", group=g, question=q0, gold=gold0,
                                          template=t, instance_seed=s0_seed))
        per_level["S2"].append(ReplayItem(level="S2", group=g, question=reword(q0, g + seed),
                                          gold=gold0, template=t, instance_seed=s0_seed))
        per_level["S3"].append(ReplayItem(level="S3", group=g, question=q3, gold=gold3,
                                          template=t, instance_seed=s3_seed))
        per_level["S4"].append(ReplayItem(level="S4", group=g, question=q4, gold=gold4,
                                          template=t4, instance_seed=s4_seed))
    return [item for lv in LEVELS for item in per_level[lv]]


def items_by_level(items: Iterable[ReplayItem]) -> dict[str, list[ReplayItem]]:
    out: dict[str, list[ReplayItem]] = {lv: [] for lv in LEVELS}
    for it in items:
        out[it.level].append(it)
    return out


def main() -> None:  # pragma: no cover - convenience dump
    import argparse
    import json

    ap = argparse.ArgumentParser(description="Print the replay stream as JSON lines.")
    ap.add_argument("--groups", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS)
    args = ap.parse_args()
    for item in build_replay_stream(args.groups, args.seed, args.max_chars):
        print(json.dumps(item.model_dump()))


if __name__ == "__main__":  # pragma: no cover
    main()
